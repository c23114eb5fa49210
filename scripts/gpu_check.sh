#!/usr/bin/env bash
# Everything a lent GPU machine should do for plrnn's CUDA kernels, in one command, in under
# 10 minutes: install the carried wheels, compile-check the kernels, build the extension for this
# GPU, run every CUDA test, benchmark every backend (plrnn.bench.gpu), and in the time left run
# Table 1 and Table 2 at device=cuda.
#
# Run from the repository root, on the device machine (the device tool: carry [".whl"]), with
# the commit sent typed in (the copy's git metadata there was older than its files):
#     PLRNN_GIT_COMMIT=<git rev-parse HEAD here> bash scripts/gpu_check.sh
# .whl holds wheels of what that machine lacks (Hydra, asv, accelerated-scan, ...). Results go
# to $OUT (the device tool's return folder; ./gpu_out elsewhere):
#     gpu_check.log   everything printed below (the benchmark's progress too)
#     nvcc_check.txt  registers/spills per kernel (scripts/nvcc_check.sh)
#     pytest.log      the CUDA tests (pytest -m cuda), with a junit summary in pytest.xml
#     gpu_bench.csv, gpu_bench.md, gpu_bench.json   the benchmark (plrnn.bench.gpu)
#     results.tar     results/cuda-<gpu>/ of the reproductions run in the time left (Table 1,
#                     then Table 2, at scale=paper with fewer rounds; GPU_CHECK_TABLES names
#                     which: default "table1 table2", "" for none), each table appended as it
#                     finishes
# (8 files: the device tool brings back at most 8, dropping any others at random. The tables
# are written outside $OUT and go into results.tar one by one, so a run cut off at any point
# leaves no more than these 8.)
# One overall deadline, GPU_CHECK_DEADLINE_S (default 540 s, under the device tool's 600 s per
# call): every step gets the lesser of its own cap and the time left, so the script always ends
# with its summary and files. Step caps (seconds): GPU_CHECK_NVCC_S (0 skips the nvcc check),
# GPU_CHECK_BUILD_S, GPU_CHECK_TEST_S, GPU_CHECK_BENCH_S. pytest is stopped with SIGINT at its
# limit, so it still prints its summary and writes pytest.xml; the benchmark writes each row as
# it finishes, and its tables when stopped with SIGINT at its own limit.
# Exit status: 0 when the build, tests and benchmark all succeeded; 2 without a GPU; otherwise
# the first failing step's status.
set -uo pipefail

cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu_out}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/gpu_check.log") 2>&1
tee_pid=$!
trap 'exec 1>&- 2>&-; wait "$tee_pid"' EXIT  # the log is complete before the files go back
t0=$(date +%s)
deadline=${GPU_CHECK_DEADLINE_S:-540}
step() { echo; echo "=== [$(( $(date +%s) - t0 )) s] $*"; }
# limit CAP: the lesser of CAP and the seconds left before the deadline (at least 1)
limit() {
  local left=$(( deadline - ($(date +%s) - t0) ))
  local cap=$1
  (( left < cap )) && cap=$left
  (( cap < 1 )) && cap=1
  echo "$cap"
}
status=0
fail() { [ "$status" -eq 0 ] && status=$1; echo "gpu_check: $2 (status $1)"; }
# wait_for PID SECONDS: wait for a background job, at most SECONDS; 124 when it is still running
# then (it is left to finish: killing a compiler midway leaves torch's build lock behind, on
# which the next import of the extension waits for ever).
wait_for() {
  local end=$(( $(date +%s) + $2 ))
  while kill -0 "$1" 2>/dev/null; do
    (( $(date +%s) >= end )) && return 124
    sleep 1
  done
  wait "$1"
}

step "GPU"
if ! python3 -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "gpu_check: no CUDA GPU here (torch.cuda.is_available() is False); this script is for a"
  echo "machine with one (the lent GPU machine). Nothing was run."
  exit 2
fi
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv || true
python3 -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda, torch.cuda.get_device_name(0))"
echo "commit: ${PLRNN_GIT_COMMIT:-not given (PLRNN_GIT_COMMIT); git here says $(git rev-parse --short HEAD 2>/dev/null)}"

step "wheels"
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || fail 3 "installing the carried wheels failed"
  export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
else
  echo "no .whl/ here: tests that need Hydra/asv may not import, accelerated-scan is skipped"
fi
export PYTHONPATH=$PWD/src:${PYTHONPATH:-}  # plrnn from this checkout, no install needed
export TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-/tmp/torch_extensions}
export PYTHONUNBUFFERED=1
python3 -c "import plrnn; print('plrnn from', plrnn.__file__)" || fail 3 "plrnn does not import"
python3 -c "import hydra, omegaconf" 2>/dev/null ||
  echo "Hydra does not import (a wheel or its dependencies missing): the tables will fail"
# pytest loads every installed plugin at startup, and one that does not import (a --no-deps
# wheel without its dependencies: hydra-core's plugin needs omegaconf and antlr4) ends it before
# any test runs. Hydra's is never needed by the CUDA tests; any other that fails is named here.
no_plugins=(-p no:hydra_pytest)
for plugin in $(python3 - <<'EOF'
import sys
from importlib.metadata import entry_points
for ep in entry_points(group="pytest11"):
    if ep.name == "hydra_pytest":
        continue
    try:
        ep.load()
    except Exception as err:
        print(f"pytest plugin {ep.name} does not import, turned off: {err!r}", file=sys.stderr)
        print(ep.name)
EOF
); do no_plugins+=(-p "no:$plugin"); done

step "nvcc compile check (sm_90, registers and spills)"
if [ "${GPU_CHECK_NVCC_S:-90}" -gt 0 ]; then
  PLRNN_CUDA_ARCHS=90 timeout "$(limit "${GPU_CHECK_NVCC_S:-90}")" bash scripts/nvcc_check.sh \
    --allow-spills 2>&1 | tee "$OUT/nvcc_check.txt"
  [ "${PIPESTATUS[0]}" -eq 0 ] || fail 4 "nvcc_check failed or timed out"
else
  echo "skipped (GPU_CHECK_NVCC_S=0)"
fi

step "build the extensions (CUDA for this GPU; the C++ CPU kernels the test suite also loads)"
# The CUDA tests run in GPU_CHECK_TEST_WORKERS pytest-xdist workers where xdist is installed
# (a crash then fails one test instead of ending the run), each on as many CPU threads as share
# the cores. No CPU calibration: the test suite turns it off (tests/conftest.py), and so does
# the benchmark below, whose CPU work is only its float64 truths.
workers=${GPU_CHECK_TEST_WORKERS:-4}
python3 -c "import xdist" 2>/dev/null || workers=0
test_threads=$(( $(nproc) / (workers > 0 ? workers : 1) )); (( test_threads < 1 )) && test_threads=1
PLRNN_VERBOSE_BUILD=1 python3 -c "
from plrnn.recurrence import cpu
print('cpu kernels:', cpu.load() or 'built')
" >/tmp/plrnn_cpu_build.txt 2>&1 &
cpu_build=$!
built=1
if ! PLRNN_VERBOSE_BUILD=1 timeout "$(limit "${GPU_CHECK_BUILD_S:-200}")" python3 - <<'EOF'
import sys, time
import torch
from plrnn.recurrence import cuda
t = time.time()
reason = cuda.load()
print(f"cuda kernels: {reason or 'built'} ({time.time() - t:.0f} s)")
if reason:
    sys.exit(1)
# a first call of each kernel, so a launch failure shows here in one line
x = torch.randn(1000, 48, device="cuda")
a = torch.rand(1000, 48, device="cuda")
for name in ("cuda_serial", "cuda_paper", "cuda_parallel"):
    import plrnn
    h = plrnn.linear_recurrence(a, x, backend=name)
    torch.cuda.synchronize()
    ref = plrnn.linear_recurrence(a.cpu().double(), x.cpu().double(), backend="reference")
    print(f"  {name}: max |h - reference| = {(h.cpu().double() - ref).abs().max().item():.2e}")
EOF
then
  built=0; fail 5 "the CUDA build or its first calls failed or timed out"
fi
wait_for "$cpu_build" "$(limit "${GPU_CHECK_BUILD_S:-200}")" ||
  echo "gpu_check: the C++ CPU kernels' build ended with an error or is still running"
# the compiler's output only when the build failed (the CUDA tests and the benchmark's float64
# truths need the CPU kernels)
if grep -q "^cpu kernels: built" /tmp/plrnn_cpu_build.txt; then
  echo "cpu kernels: built"
else
  tail -n 60 /tmp/plrnn_cpu_build.txt; fail 5 "the C++ CPU kernels did not build"
fi

# accelerated_scan.warp compiles its CUDA code when first imported: do that while the tests run
python3 -c "import accelerated_scan.warp" >/tmp/plrnn_accelerated_scan_build.txt 2>&1 &
accelerated_scan_build=$!

step "CUDA tests (pytest -m cuda)"
# The CUDA and Triton test files by name: collecting all of tests/ would let one missing wheel
# fail the run at import. -v puts every test in the log, so a hang shows where it stopped;
# faulthandler prints every thread's stack after 45 s in one test, and pytest-timeout (where
# installed) then ends a test still running at 120 s, naming it, so the others go on. pytest
# gets SIGINT at test_cap and SIGKILL 20 s later: test_cap + 20 s leaves the benchmark 150 s of
# the deadline, unless less than 200 s were left to begin with (then the tests get 30 s).
if [ "$built" -eq 1 ]; then
  test_cap=$(limit "${GPU_CHECK_TEST_S:-180}")
  (( test_cap > $(limit 100000) - 150 - 20 )) && test_cap=$(( $(limit 100000) - 150 - 20 ))
  (( test_cap < 30 )) && test_cap=30
  xdist=(); (( workers > 0 )) && xdist=(-n "$workers")
  hang=(); python3 -c "import pytest_timeout" 2>/dev/null &&
    hang=(--timeout=120 --timeout-method=thread)
  echo "pytest: ${workers} xdist worker(s) (0: in this process), $test_threads CPU thread(s) each"
  OMP_NUM_THREADS=$test_threads timeout -s INT -k 20 "$test_cap" python3 -m pytest -m cuda \
    "${xdist[@]}" "${hang[@]}" "${no_plugins[@]}" -v -rfE --durations=15 -p no:cacheprovider \
    -o faulthandler_timeout=45 --junitxml="$OUT/pytest.xml" \
    tests/recurrence/test_cuda.py tests/recurrence/test_triton.py \
    2>&1 | tee "$OUT/pytest.log" | grep -v -E " PASSED( |$)" | tail -n 60
  test_status=${PIPESTATUS[0]}
  [ "$test_status" -eq 0 ] || fail 6 "CUDA tests failed or timed out (pytest status $test_status)"
else
  echo "skipped: the CUDA kernels did not build"
fi

wait_for "$accelerated_scan_build" "$(limit 120)"
case $? in
  0) echo "accelerated_scan.warp: built" ;;
  124) echo "accelerated_scan.warp: still compiling; its benchmark cases wait for it" ;;
  *) echo "accelerated_scan.warp: not available:"
     tail -n 3 /tmp/plrnn_accelerated_scan_build.txt ;;
esac

step "benchmark (plrnn.bench.gpu)"
# --budget-s stops starting cases; the timeout's 40 s margin lets the last one finish, and its
# SIGINT lets the benchmark write its tables (10 s, then SIGKILL): 55 s in all, within the
# deadline. Its CPU work is the float64 truths alone: no calibration (12 s at 16 threads).
left=$(limit 100000)
budget=$(( left - 55 ))
(( budget > ${GPU_CHECK_BENCH_S:-150} )) && budget=${GPU_CHECK_BENCH_S:-150}
(( budget < 10 )) && budget=10
PLRNN_AUTO_CALIBRATION=0 timeout -s INT -k 10 "$(limit $(( budget + 40 )))" \
  python3 -m plrnn.bench.gpu --out "$OUT" --budget-s "$budget" |
  grep -v "^|"  # the tables come once, in the summary
bench_status=${PIPESTATUS[0]}
[ "$bench_status" -eq 0 ] || fail 7 "the benchmark failed (status $bench_status)"

step "reproductions (Table 1, Table 2 at device=cuda, in the time left)"
# Lowest priority, so last: each table gets the time left (less a margin for the summary and
# the tar) and is skipped when too little is left. Fewer rounds than scale=paper's own; the
# rounds used are in each table's JSON config. Each writes 4 files: outside $OUT, then into
# results.tar as soon as it finishes (see the file list above).
declare -A table_jobs=(
  [table1]="table1.py scale.rounds=5 scale.min_run_time=0.1"
  [table2]="table2.py scale.rounds=2 scale.min_run_time=0.1"
)
tables=${GPU_CHECK_TABLES-table1 table2}
table_dir=/tmp/plrnn_tables
if [ -n "$tables" ] && [ "$built" -eq 1 ]; then
  for table in $tables; do
    job=${table_jobs[$table]:-}
    if [ -z "$job" ]; then
      echo "skipped $table: GPU_CHECK_TABLES takes ${!table_jobs[*]}"; continue
    fi
    left=$(( $(limit 100000) - 15 ))
    if (( left < 45 )); then echo "skipped ${job%% *}: ${left} s left"; continue; fi
    echo "--- ${job%% *} (at most ${left} s)"
    rm -rf "$table_dir"
    # shellcheck disable=SC2086  # job is the script and its overrides, split on purpose
    timeout -k 5 "$left" python3 reproductions/$job device=cuda scale=paper progress=false \
      results_dir="$table_dir/results" 2>&1 | grep -v -E "^\s*$" | tail -n 40
    [ "${PIPESTATUS[0]}" -eq 0 ] || fail 8 "reproductions/${job%% *} failed or timed out"
    if [ -d "$table_dir/results" ]; then
      tar -C "$table_dir" -rf "$OUT/results.tar" results || fail 8 "appending to results.tar"
    fi
    rm -rf "$table_dir"
  done
else
  echo "skipped (GPU_CHECK_TABLES='$tables', built=$built)"
fi

step "summary"
# A build still running would outlive the script. jobs -p: this shell's children not yet
# reaped, so that no recycled process id is signalled.
for job in $(jobs -p); do
  [[ $job == "$cpu_build" || $job == "$accelerated_scan_build" ]] && kill "$job" 2>/dev/null
done
[ -f "$OUT/gpu_bench.md" ] && cat "$OUT/gpu_bench.md"
# the tests' lines after the benchmark's tables, so that the device tool's last 12,000
# characters keep them
echo
if [ -f "$OUT/pytest.log" ]; then
  echo "CUDA tests (pytest.log): failures, errors, totals"
  grep -E "^(FAILED|ERROR) " "$OUT/pytest.log" | tail -n 20
  totals='^=+ .* in [0-9.]+s'
  grep -E "$totals" "$OUT/pytest.log" ||
    { echo "no totals: pytest ended early, in or after:"; grep "::" "$OUT/pytest.log" | tail -n 1; }
else
  echo "CUDA tests: not run"
fi
echo
echo "gpu_check: done in $(( $(date +%s) - t0 )) s, status $status"
exit "$status"
