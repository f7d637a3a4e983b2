#!/usr/bin/env bash
# The main job: set up the environment (first run only), then run the example graph end to end on a
# tiny built-in model in real ComfyUI. Results go to output/ (or the folder given with --output).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bash "$here/scripts/setup_env.sh"
cd "$here"
exec "$here/.venv/bin/python" -m dev.demo "$@"
