#!/usr/bin/env bash
# The test suite: set up the environment (first run only), then pytest in real ComfyUI.
# Extra arguments go to pytest (e.g. -k gate, -x).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bash "$here/scripts/setup_env.sh"
cd "$here"
exec "$here/.venv/bin/python" -m pytest "$@"
