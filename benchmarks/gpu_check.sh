#!/usr/bin/env bash
# One check for a person with a GPU (about 10 minutes on one recent NVIDIA GPU; see benchmarks/gpu_check/README.md):
#   1. the test suite with ComfyUI on CUDA (PERSONALVIDEO_COMFY_DEVICE=cuda),
#   2. benchmarks/gpu_check/check.py: a Wan-shaped medium model's training step (seconds, peak GPU memory) with
#      checkpoint_blocks on/off x fp8 on/off, decode_gradient plain, --cpu-vae, and the gate's sampling overhead
#      (bf16 and an fp8_scaled file), printed as one table.
#   On a ComfyUI with DynamicVRAM (0.33+, default on NVIDIA) both run twice: as users have it (DynamicVRAM on) and
#   with --disable-dynamic-vram (the classic ModelPatcher).
#
#   bash benchmarks/gpu_check.sh             # on a GPU machine, after bash scripts/setup_env.sh
#   bash benchmarks/gpu_check.sh --reduced   # tiny sizes, no test suite, runs on the CPU (what the tests run)
#
# Extra arguments after the mode go to pytest (e.g. -k trainer). Exit status: non-zero when the suite failed or a
# measurement was not finite.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$here" || exit 2
PY=${PYTHON:-$here/.venv/bin/python}
mode=full
if [[ "${1:-}" == "--reduced" ]]; then mode=reduced; shift; fi
# glibc hands freed memory back at once, so the CPU's resident set follows live tensors (the CPU peak column)
export MALLOC_MMAP_THRESHOLD_=65536 MALLOC_TRIM_THRESHOLD_=0
comfy=${COMFYUI_PATH:-$here/.comfyui/ComfyUI}
# DynamicVRAM runs (label, extra ComfyUI argument): both where this ComfyUI has it and a GPU is used
runs=("classic ModelPatcher|")
if [[ $mode == full ]] && grep -q -- "--disable-dynamic-vram" "$comfy/comfy/cli_args.py" 2>/dev/null; then
  runs=("DynamicVRAM on|" "DynamicVRAM off|--disable-dynamic-vram")
fi
base_args=${PERSONALVIDEO_COMFY_ARGS:-}
suite=skipped
measured=0
if [[ $mode == full ]]; then
  export PERSONALVIDEO_COMFY_DEVICE=${PERSONALVIDEO_COMFY_DEVICE:-cuda}
  if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "gpu_check: torch sees no CUDA device; on a CPU machine run: bash benchmarks/gpu_check.sh --reduced" >&2
    exit 2
  fi
  suite=passed
fi
for run in "${runs[@]}"; do
  label=${run%%|*}
  export PERSONALVIDEO_COMFY_ARGS="$base_args ${run#*|}"
  if [[ $mode == full ]]; then
    echo "== test suite, ComfyUI on $PERSONALVIDEO_COMFY_DEVICE, $label"
    "$PY" -m pytest -q "$@" tests || suite=FAILED
  fi
  echo "== measurements ($mode, $label)"
  "$PY" -m benchmarks.gpu_check.check --mode "$mode" || measured=1
done
echo "test suite: $suite"
[[ $suite != FAILED && $measured == 0 ]]
