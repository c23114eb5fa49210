#!/usr/bin/env bash
# Compiles the CUDA kernels (src/plrnn/recurrence/csrc/*.cu) with nvcc for every target in
# PLRNN_CUDA_ARCHS (default "80 90") on a machine that needs no GPU, and prints each kernel's
# registers, spills, stack frame and shared memory as ptxas reports them (-Xptxas -v).
# Then, where python can import torch, syntax-checks the torch binding (cuda_binding.cpp) against
# torch's and CUDA's headers with the host compiler, since the binding itself is only built on a
# machine with a GPU.
#
# Exit status: 0 on success; 1 if any file fails to compile, or if a cuda_parallel kernel
# (parallel_scan) spills registers (it is sized not to; pass --allow-spills to only report);
# 127 if nvcc is not found (NVCC=/path/to/nvcc chooses one).
set -euo pipefail

allow_spills=0
for arg in "$@"; do
  case "$arg" in
    --allow-spills) allow_spills=1 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "nvcc_check: unknown argument $arg" >&2; exit 2 ;;
  esac
done

root=$(cd "$(dirname "$0")/.." && pwd)
csrc="$root/src/plrnn/recurrence/csrc"
nvcc=${NVCC:-nvcc}
if ! command -v "$nvcc" >/dev/null 2>&1; then
  echo "nvcc_check: nvcc not found (set NVCC or put the CUDA toolkit's bin on PATH)" >&2
  exit 127
fi
archs=${PLRNN_CUDA_ARCHS:-"80 90"}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "nvcc_check: $("$nvcc" --version | tail -n 2 | head -n 1)"
# One job per target, in parallel (each nvcc runs its front end and ptxas per file).
compile_arch() {
  local arch=$1 src name log failed=0
  for src in "$csrc"/*.cu; do
    name=$(basename "$src" .cu)
    log="$tmp/$name.sm_$arch.log"
    # the flags of the runtime build: cuda.py's and torch.utils.cpp_extension's own (no implicit
    # half/bfloat16 conversions or operators; not its --expt-relaxed-constexpr, so that the
    # kernels build without it too), plus the resource report
    if "$nvcc" -std=c++17 -O3 -lineinfo -gencode "arch=compute_$arch,code=sm_$arch" \
        -D__CUDA_NO_HALF_OPERATORS__ -D__CUDA_NO_HALF_CONVERSIONS__ \
        -D__CUDA_NO_BFLOAT16_CONVERSIONS__ -D__CUDA_NO_HALF2_OPERATORS__ \
        -Xptxas -v -c "$src" -o "$tmp/$name.sm_$arch.o" >"$log" 2>&1; then
      echo "ok      sm_$arch  $name.cu" >>"$tmp/status.sm_$arch"
    else
      echo "FAILED  sm_$arch  $name.cu" >>"$tmp/status.sm_$arch"
      cat "$log" >>"$tmp/status.sm_$arch"
      failed=1
    fi
  done
  return $failed
}
# The binding: host compiler, torch and CUDA headers, syntax only (no GPU, no CUDA torch needed).
check_binding() {
  # CUDA's headers where nvcc itself finds them (nvcc may be a wrapper script)
  local cuda_includes torch_includes cxx inc flags=()
  cuda_includes=$("$nvcc" --dryrun -c -x cu /dev/null -o /dev/null 2>&1 |
    sed -n 's/.*INCLUDES="\([^"]*\)".*/\1/p' | head -n 1 | sed 's/-I//g')
  if ! torch_includes=$(python3 -c "from torch.utils.cpp_extension import include_paths; print(' '.join(include_paths()))" 2>/dev/null); then
    echo "skipped host    cuda_binding.cpp (python3 cannot import torch)" >"$tmp/binding.status"
    return 0
  fi
  cxx=${CXX:-c++}
  for inc in $torch_includes $cuda_includes; do flags+=(-isystem "$inc"); done
  if "$cxx" -std=c++17 -fsyntax-only -Wall -Wextra -DC10_CUDA_NO_CMAKE_CONFIGURE_FILE \
      "${flags[@]}" "$csrc/cuda_binding.cpp" >"$tmp/binding.log" 2>&1; then
    echo "ok      host    cuda_binding.cpp (syntax, torch and CUDA headers)" >"$tmp/binding.status"
  else
    { echo "FAILED  host    cuda_binding.cpp"; cat "$tmp/binding.log"; } >"$tmp/binding.status"
    return 1
  fi
}

status=0
check_binding &
binding_pid=$!
pids=()
for arch in $archs; do
  compile_arch "$arch" &
  pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
for arch in $archs; do cat "$tmp/status.sm_$arch"; done

# One line per kernel and target from the ptxas reports.
python3 - "$allow_spills" "$tmp"/*.sm_*.log <<'EOF' || status=1
import re, shutil, subprocess, sys

allow_spills = sys.argv[1] == "1"
rows, spilling = [], []
for path in sys.argv[2:]:
    kernel = arch = None
    for line in open(path, errors="replace"):
        m = re.search(r"Compiling entry function '(\S+)' for '(sm_\d+)'", line)
        if m:
            kernel, arch = m.groups()
            stack = spills = 0
            continue
        m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if m and kernel:
            stack, spills = int(m[1]), int(m[2]) + int(m[3])
            continue
        m = re.search(r"Used (\d+) registers", line)
        if m and kernel:
            s = re.search(r"(\d+) bytes smem", line)
            rows.append((arch, kernel, int(m[1]), spills, stack, int(s[1]) if s else 0))
            if spills and "parallel_scan" in kernel:
                spilling.append(kernel)
            kernel = None

names = [r[1] for r in rows]
if shutil.which("c++filt") and names:
    out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True)
    demangled = out.stdout.splitlines()
    if len(demangled) == len(names):
        names = demangled
print(f"{'arch':7} {'regs':>4} {'spill B':>7} {'stack B':>7} {'smem B':>6}  kernel")
for (arch, _, regs, spills, stack, smem), name in sorted(zip(rows, names)):
    name = re.sub(r"\(anonymous namespace\)::", "", name)
    name = re.sub(r"\(.*\)$", "", name)
    print(f"{arch:7} {regs:4d} {spills:7d} {stack:7d} {smem:6d}  {name}")
print(f"nvcc_check: {len(rows)} kernels compiled")
if spilling and not allow_spills:
    print(f"nvcc_check: {len(spilling)} cuda_parallel kernels spill registers "
          "(max_steps in scan_parallel.cu sizes them not to)", file=sys.stderr)
    sys.exit(1)
EOF

wait "$binding_pid" || status=1
cat "$tmp/binding.status"

exit $status
