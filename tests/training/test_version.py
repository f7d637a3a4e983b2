"""The pack's version is written once, in pyproject.toml: adapter files record it (training/version.py reads it
without tomllib, which the node pack's Python 3.10 lacks)."""

import tomllib
from pathlib import Path

import torch

from personalvideo.training.adapter.files import build_metadata
from personalvideo.training.version import pack_version

REPO = Path(__file__).resolve().parents[2]


def test_adapter_files_record_pyprojects_version():
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert pack_version() == version
    tensors = {"diffusion_model.x.lora_up.weight": torch.zeros(4, 2), "diffusion_model.x.lora_down.weight":
               torch.zeros(2, 4), "diffusion_model.x.alpha": torch.tensor(2.0)}
    assert build_metadata(tensors, 0.75, "WAN21_T2V")["personalvideo.version"] == version
