"""Benchmark of plrnn.linear_recurrence: what users pay, every CPU backend side by side, one run.

    python -m plrnn.bench.recurrence                     # default run (about 5 min on 2 cores)
    python -m plrnn.bench.recurrence --quick             # smaller shapes, shorter timing (~1.5 min)
    python -m plrnn.bench.recurrence --smoke             # tiny shapes: the whole pipeline, seconds
    python -m plrnn.bench.recurrence --all-distributions # the Table-1 grid under all five decays
    python -m plrnn.bench.recurrence --sweep-auto        # only the channels x T sweep behind `auto`

What users pay: every method is called in a plain loop with a fresh output per call (rows marked
`out=` write into a preallocated buffer instead), and every measurement is taken twice:
* allocator `default`: this process as it starts, glibc malloc untouched. A large fresh output is
  then mmap'd from the OS and page-faulted on every call, which can cost several times the
  kernel itself: that is what a user's loop pays. The CPU kernels' own outputs of 1 MiB and more
  come from their cache of freed outputs (csrc/cpu_output_cache.cpp), so theirs do not fault
  after the first call where torch's ops' may.
* allocator `steady`: a child process (`python -m plrnn.bench.recurrence ... --allocator steady`)
  that first calls timing.reuse_freed_pages() (glibc mallopt), so freed pages are reused and a
  fresh output costs no page faults: the kernels' own speed. mallopt cannot be undone in-process,
  hence the child. `--allocator default` or `--allocator steady` runs one of the two alone.
Tables show the two side by side; the CSV's `allocator` column says which one each row used, and
its `faults_per_call` whether a row's calls paid page faults (sections 1 and 5 show it).

Decays (the gates) come from one of DISTRIBUTIONS: U[0,1) (many decays near 0), U[0.9,1), and
sigmoid(N(mu, 1)) for mu = 0, 2, 5 (forget gates; means 0.50, 0.84, 0.99); impulses and grad_h are
N(0, 1). Each input comes from a generator seeded by (--seed, shape, distribution), and every
backend's output is checked against a float64 loop once before it is timed (a wrong kernel is an
`error` row, never a time).

Sections (CPU, fp32 but for the last):
1. Bandwidth, forward at (T, C) = (65536, 128), (65536, 1024), (4096, 16384) on 1 and 2 torch
   threads: cpu_serial with a fresh output and with out=, against the practical limit torch.mul
   (the same 12 bytes/element, fresh and out=) and the physical limit dst.copy_(src).
2. Latency-bound regime: 4 and 32 channels, long T, forward and forward+backward; auto's
   forward against torch.mul (fresh outputs), which a dependency chain, not memory, bounds here.
3. The paper's Table-1 grid (batch 1, m channels, T steps), forward, under U[0,1) and
   sigmoid(N(2,1)) (all five with --all-distributions); auto against the best backend.
4. Decay distributions: every backend, forward at (262144, 4) and (65536, 128) under each
   distribution, relative to the same backend and shape under U[0,1).
5. Forward+backward at T=65536, 128 channels against the practical limit y = a * x with its
   backward (36 bytes/element: its backward reads g once per input; the scan moves 32), torch's
   associative_scan and the Python loop.
6. Dtypes: auto's forward in each of DTYPES at (65536, 4) and (65536, 128) against torch.mul on
   the same dtype (no goal).
7. Input layouts: auto on (T, 1, 32, 64) impulses with one decay per head, and on batch-first
   (8, T, 256) sequences passed as transposed views, as given, copied by the caller inside the
   timed call, and contiguous time-major from the start (no goal).
Each section ends with goal lines computed from this run's medians, per allocator; a goal that
is not met says so. The Goals section at the end repeats them all.

Writes into --out (default results/<machine_name()>/): recurrence_bench.csv (every measurement of
both allocators, with the raw blocked_autorange block times), recurrence_bench.md (the tables
under a header naming machine, torch, commit, allocators, distributions and config) and
recurrence_bench.json (machine_info, config, goals). With --sweep-auto: auto_sweep.{csv,md,json}.

Modules: config (the sizes of each mode, Config), inputs (seeded inputs, the float64 check;
the decay distributions come from plrnn.bench.decays), tasks (Task, Env, the tasks of each
section), runner (cells timed in interleaved rounds, one record per task), rows (a row's time,
ratios of two rows paired over rounds), goals (thresholds, Goal), sections (the tables of
sections 1-7), sweep (--sweep-auto), header (the report's header) and cli (arguments, the
steady-allocator child, main).
"""
