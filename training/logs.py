"""The pack's logger names: ``personalvideo.<module>`` however the package was imported.

ComfyUI imports a custom node folder under its path (0.3.75 to 0.33: ``sys.modules[module_path]``), so ``__name__``
in the pack is e.g. ``/home/me/ComfyUI/custom_nodes/PersonalVideo.training.identity.reward`` and every log line
would name a file path. Installed (tests, the demo, the scale-out command) the package is ``personalvideo`` and the
names are the same ones. One logger, ``personalvideo``, above them all: a handler or level set there covers the pack.
"""

from __future__ import annotations

import logging

PACK = "personalvideo"


def pack_logger(module: str) -> logging.Logger:
    """The logger of the pack's module ``module`` (its ``__name__``): ``personalvideo.`` + the part after the package
    name (ComfyUI replaces the dots of the folder's path, so the first dot ends the package name)."""
    _, _, sub = module.partition(".")
    return logging.getLogger(f"{PACK}.{sub}" if sub else PACK)
