"""Test fixtures: one real in-process ComfyUI per session, running the installed package personalvideo."""

from __future__ import annotations

import pytest

from dev.comfy_runtime import installed_pack

installed_pack()  # personalvideo is this checkout (editable install), or a clear error saying how to fix it


@pytest.fixture(scope="session")
def comfy(tmp_path_factory):
    """A real ComfyUI (0.3.75 from setup_env.sh, or $COMFYUI_PATH) running in this process, pack installed."""
    from dev.comfy_runtime import ComfyRuntime

    return ComfyRuntime.boot(tmp_path_factory.mktemp("comfy_base"))
