"""The pack's version, written in one place: pyproject.toml's ``[project] version``.

A checkout (and ComfyUI's custom_nodes folder, which is one) has pyproject.toml beside the package, so it is read
there, without tomllib: the node pack runs on Python 3.10, whose standard library has none. An installed wheel has
no pyproject.toml; its distribution metadata carries the same version.
"""

from __future__ import annotations

import functools
import re
from importlib import metadata
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
_PROJECT_VERSION = re.compile(r'^\[project\]$(?:(?!^\[).)*?^version\s*=\s*"([^"]+)"', re.M | re.S)


@functools.cache
def pack_version() -> str:
    """The version adapter files record (``personalvideo.version``); "unknown" when neither source has one."""
    if PYPROJECT.is_file():
        found = _PROJECT_VERSION.search(PYPROJECT.read_text())
        if found:
            return found[1]
    try:
        return metadata.version("personalvideo")
    except metadata.PackageNotFoundError:
        return "unknown"
