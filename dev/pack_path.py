"""Import this checkout's pack as the package ``PersonalVideo`` (how ComfyUI sees it) outside ComfyUI.

The repository folder is the package, so a link named PersonalVideo is put in a folder of its own per
checkout (keyed by the checkout's path): two checkouts on one machine never import each other's code.
"""

from __future__ import annotations

import hashlib
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def add_pack_to_path() -> Path:
    """Put ``<tmp>/personalvideo_pkgpath_<key>/PersonalVideo -> this checkout`` first on sys.path."""
    key = hashlib.sha256(str(REPO).encode()).hexdigest()[:12]
    folder = Path(tempfile.gettempdir()) / f"personalvideo_pkgpath_{key}"
    folder.mkdir(exist_ok=True)
    link = folder / "PersonalVideo"
    if not link.is_symlink():
        link.symlink_to(REPO, target_is_directory=True)
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    return folder
