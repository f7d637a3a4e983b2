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


def test_train_extra_matches_requirements_train_and_the_tests_install_it():
    """The scale-out trainer's dependencies: one pinned list in two places, and CI (requirements-test.txt)
    installs it so tests/scaleout/ runs there."""
    lines = (REPO / "requirements-train.txt").read_text().splitlines()
    listed = {line.strip().replace('"', "'") for line in lines if line.strip() and not line.strip().startswith("#")}
    extra = set(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["train"])
    assert listed == extra
    pinned = {p for p in listed if ";" not in p}  # tomli: the TOML parser where Python 3.10 lacks tomllib
    assert _names(pinned) == {"diffusers", "peft", "accelerate", "transformers"}
    assert all("==" in p for p in pinned), pinned
    assert listed - pinned == {"tomli>=1.1; python_version < '3.11'"}
    assert "-r requirements-train.txt" in (REPO / "requirements-test.txt").read_text().splitlines()
    assert not _names(pinned) & _names((REPO / "requirements.txt").read_text().splitlines())
