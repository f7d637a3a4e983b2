"""Test fixtures: the pack importable as ``PersonalVideo``, and one real in-process ComfyUI per session."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.append(str(REPO))  # for dev.* (appended: the repo root also holds nodes/ and training/)

# Unit tests import the pack the way ComfyUI sees it: as a package named after its folder.
_PKG_PATH = Path(tempfile.gettempdir()) / "personalvideo_pkgpath"
_PKG_PATH.mkdir(exist_ok=True)
_link = _PKG_PATH / "PersonalVideo"
if not _link.is_symlink() or _link.resolve() != REPO:
    if _link.is_symlink():
        _link.unlink()
    _link.symlink_to(REPO, target_is_directory=True)
sys.path.insert(0, str(_PKG_PATH))


@pytest.fixture(scope="session")
def comfy(tmp_path_factory):
    """A real ComfyUI (0.3.75 from setup_env.sh, or $COMFYUI_PATH) running in this process, pack installed."""
    from dev.comfy_runtime import ComfyRuntime

    return ComfyRuntime.boot(tmp_path_factory.mktemp("comfy_base"))
