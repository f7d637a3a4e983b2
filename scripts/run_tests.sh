#!/usr/bin/env bash
# The test suite: set up the environment (first run only), then pytest in real ComfyUI.
# Extra arguments go to pytest (e.g. -k gate, -x).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bash "$here/scripts/setup_env.sh"
# The frontend check (tests/workflows/test_frontend_loads.py) opens ComfyUI's frontend in Debian's chromium.
if ! command -v chromium >/dev/null 2>&1 && [ -z "${PERSONALVIDEO_CHROMIUM:-}" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
  else
    echo "the frontend check needs Chromium: sudo apt-get install chromium (or set PERSONALVIDEO_CHROMIUM)" >&2
  fi
fi
cd "$here"
exec "$here/.venv/bin/python" -m pytest "$@"
