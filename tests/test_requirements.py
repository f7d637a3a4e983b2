"""The pack's dependency lists: requirements.txt and pyproject.toml agree, and neither names an onnxruntime wheel
(pip would install the CPU wheel over a ComfyUI's onnxruntime-gpu, which shares its package directory)."""

import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _names(lines) -> set[str]:
    return {re.split(r"[<>=!~;\[ ]", line.strip(), maxsplit=1)[0].lower() for line in lines
            if line.strip() and not line.strip().startswith("#")}


def test_requirements_and_pyproject_agree_and_leave_onnxruntime_to_the_user():
    req = _names((REPO / "requirements.txt").read_text().splitlines())
    project = _names(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"])
    assert req == project
    assert not {n for n in req if n.startswith("onnxruntime")}, req
    assert "onnx" in req  # the ArcFace and detector graphs are still parsed with onnx
