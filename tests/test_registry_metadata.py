"""What the Comfy Registry and ComfyUI-Manager read from pyproject.toml, read by ComfyUI's own reader
(comfy_config/config_parser.py, the copy of comfy-cli's registry parser that ComfyUI 0.3.75 and 0.33 ship), and the
licence the package declares and ships."""

from __future__ import annotations

import hashlib
import tomllib
from pathlib import Path

from dev.comfy_runtime import import_comfyui

REPO = Path(__file__).resolve().parent.parent
# sha256 of the FSF's verbatim GPL-3.0 text, the same bytes as ComfyUI's own LICENSE file
GPL3_SHA256 = "3972dc9744f6499f0f9b2dbf76696f2ae7ad8af9b23dde66d6af86c9dfb36986"


def test_licence_file_is_the_gpl3_text_and_pyproject_declares_it():
    text = (REPO / "LICENSE").read_bytes()
    assert hashlib.sha256(text).hexdigest() == GPL3_SHA256, "LICENSE is not the verbatim GPL-3.0 text"
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["license"] == "GPL-3.0-only" and project["license-files"] == ["LICENSE"]


def test_comfyui_reads_the_registry_fields():
    import_comfyui()
    from comfy_config.config_parser import extract_node_configuration

    config = extract_node_configuration(str(REPO))
    assert config.project.name == "personalvideo"
    assert config.project.license.text == "GPL-3.0-only"
    assert config.project.urls.repository.startswith("https://github.com/")  # a placeholder the owner fills
    assert config.project.supported_comfyui_version == ">=0.3.75"  # the oldest ComfyUI the tests run on
    assert config.tool_comfy.publisher_id == "personalvideo" and config.tool_comfy.display_name == "PersonalVideo"
    assert config.tool_comfy.icon == ""  # none on purpose (pyproject.toml says why); not an empty key left over
    assert "Icon" not in tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["comfy"]
