"""Test fixtures: the pack importable as ``PersonalVideo``, and one real in-process ComfyUI per session."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
sys.path.append(str(REPO))  # for dev.* (appended: the repo root also holds nodes/ and training/)
sys.path.append(str(TESTS))  # the shared test helpers (graphs, iresnet, comfy_runtime_errors) from any subfolder

from dev.comfy_runtime import installed_pack  # noqa: E402
from dev.pack_path import add_pack_to_path  # noqa: E402

installed_pack()  # personalvideo is this checkout (editable install), or a clear error saying how to fix it

# Unit tests import the pack the way ComfyUI sees it: as a package named after its folder.
add_pack_to_path()


@pytest.fixture(scope="session")
def comfy(tmp_path_factory):
    """A real ComfyUI (0.3.75 from setup_env.sh, or $COMFYUI_PATH) running in this process, pack installed."""
    from dev.comfy_runtime import ComfyRuntime

    return ComfyRuntime.boot(tmp_path_factory.mktemp("comfy_base"))
