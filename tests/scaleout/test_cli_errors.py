"""The train command's input errors: one line naming the input and the fix, exit code 2, no traceback (unless
--debug), nothing written; each checked before anything heavy loads. The command runs in this process (its
``main``, what ``python -m`` calls) except where the process itself is the point (--help, a missing file)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dev.face_assets import make_pack, photo_path
from personalvideo.scaleout.train import main
from test_cli_config import BASE

CONFIG = BASE.replace("tiny = true", 'path = "{path}"')  # test_cli_config's config, on a model folder


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cli_errors")
    make_pack(root, "pack")
    shutil.copy(photo_path("obama.jpg"), root / "obama.jpg")
    return root


@pytest.fixture(scope="module")
def wan_folder(assets) -> Path:
    """A real diffusers Wan folder (the tiny random pipeline, saved as diffusers saves any)."""
    from personalvideo.scaleout import tiny

    folder = assets / "models" / "wan"
    tiny.wan_pipeline().save_pretrained(folder)
    return folder


def fails(assets: Path, text: str, capsys, *extra: str) -> str:
    """Run the command on a config of ``text`` from another working directory; its one error line (checked:
    exit code 2, no traceback, nothing written next to the config)."""
    (assets / "run.toml").write_text(text)
    before = sorted(p.name for p in assets.iterdir())
    cwd = os.getcwd()
    os.chdir(assets.parent)  # relative paths are the config's, not the working directory's
    try:
        code = main([str(assets / "run.toml"), *extra])
    finally:
        os.chdir(cwd)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and err.endswith("(--debug shows the traceback)\n"), err
    assert sorted(p.name for p in assets.iterdir()) == before, "an input error wrote something"
    return err


def test_missing_model_folder_is_named_resolved_from_the_config_folder(assets, capsys):
    err = fails(assets, CONFIG.format(path="models/nope"), capsys)
    assert err.startswith(f"python -m personalvideo.scaleout.train: error: [model] path: {assets}/models/nope is not "
                          "a folder; expected a diffusers pipeline folder"), err
    assert "Models are not downloaded at run time" in err and "relative to the config file's folder" in err


def test_a_hub_id_is_not_downloaded_but_named_as_a_missing_folder(assets, capsys):
    err = fails(assets, CONFIG.format(path="Wan-AI/Wan2.1-T2V-1.3B-Diffusers"), capsys)
    assert f"{assets}/Wan-AI/Wan2.1-T2V-1.3B-Diffusers is not a folder" in err


def test_model_folder_layout_is_checked_before_the_reward_models_load(assets, wan_folder, capsys, caplog):
    broken = assets / "models" / "wan_broken"
    shutil.copytree(wan_folder, broken)
    for weights in (broken / "transformer").glob("*.safetensors"):
        weights.unlink()
    with caplog.at_level("INFO", logger="personalvideo"):
        err = fails(assets, CONFIG.format(path="models/wan_broken"), capsys)
    assert f"{broken}/transformer has no weights (*.safetensors or *.bin); the download may be incomplete" in err
    assert not [r for r in caplog.records if "identity reward: pack" in r.getMessage()]  # nothing loaded
    err = fails(assets, CONFIG.format(path="models/wan").replace('"wan"', '"hunyuan_video"', 1), capsys)
    assert "names the pipeline 'WanPipeline', expected 'HunyuanVideoPipeline' for family 'hunyuan_video'" in err
    err = fails(assets, CONFIG.format(path="models/wan/transformer"), capsys)
    assert "has no model_index.json; expected a diffusers pipeline folder" in err


def test_toml_syntax_error(assets, capsys):
    err = fails(assets, CONFIG.format(path="models/wan") + "\n[output\n", capsys)
    assert "error: config " in err and "not valid TOML" in err


def test_unknown_key_and_bad_value(assets, wan_folder, capsys):
    err = fails(assets, "[train]\nstep = 3\n" + CONFIG.format(path="models/wan"), capsys)
    assert "error: [train] step: unknown key; valid keys are steps" in err
    err = fails(assets, CONFIG.format(path="models/wan").replace('"obama.jpg"', '"absent.jpg"'), capsys)
    assert "error: [[identities]] obama photos: " in err and "absent.jpg is not a file" in err


def test_debug_shows_the_traceback(assets, capsys):
    (assets / "run.toml").write_text(CONFIG.format(path="models/nope"))
    from personalvideo.scaleout.config import ConfigError

    with pytest.raises(ConfigError, match=r"\[model\] path: .*nope is not a folder"):
        main([str(assets / "run.toml"), "--debug"])
    (assets / "run.toml").unlink()


def test_missing_config_file_from_the_shell(tmp_path):
    done = subprocess.run([sys.executable, "-m", "personalvideo.scaleout.train", "absent.toml"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert done.stderr == ("python -m personalvideo.scaleout.train: error: config: absent.toml does not exist; pass "
                           "the path of a .toml file\n(--debug shows the traceback)\n")
    assert list(tmp_path.iterdir()) == []


def test_help_answers_before_torch_is_imported(tmp_path):
    """--help parses the arguments before any heavy import (it took 8 s and 650 MB importing torch first)."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "personalvideo.scaleout.train", "--help"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "usage: python -m personalvideo.scaleout.train" in done.stdout
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time")}
    assert "argparse" in imported and not {"torch", "numpy", "diffusers"} & imported
