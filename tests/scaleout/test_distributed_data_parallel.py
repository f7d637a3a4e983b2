"""Data parallel and FSDP2 sharding with 2 real processes (torchrun, gloo on the CPU).

The model is a toy (tests/scaleout/dist_toy_worker.py says what is a stand-in): linear blocks with the LoRA inside
each, so equality can be checked exactly; the process group, the gradient mean, fully_shard, the node's Trainer
with the data-parallel hook, rank 0's files and resume are the real ones. Rank 1 finds no face in step 1, so
that step's update is rank 0's gradient alone, and under FSDP rank 1 must still take part in the backward.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from two_ranks import run_two_ranks

WORKER = "tests.scaleout.dist_toy_worker"  # run as a module from the repository root
STEPS = 4


def launch(out: Path, steps: int, *mode: str) -> list[dict]:
    """Run the worker on 2 processes; each rank's trace."""
    out.mkdir(parents=True, exist_ok=True)
    run_two_ranks("-m", WORKER, str(out), str(steps), *mode, timeout=240)
    return [torch.load(out / f"rank{r}.pt", weights_only=True) | {"out": str(out)} for r in (0, 1)]


def max_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max(float((x - y).abs().max()) for x, y in zip(a, b, strict=True))


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    return launch(tmp_path_factory.mktemp("plain"), STEPS)


def test_gradients_are_the_mean_of_the_ranks_local_gradients(plain):
    r0, r1 = plain
    assert len(r0["local"]) == STEPS
    assert r1["skipped_local"][1] == "no face in any reward frame" and r1["skipped"][1] == ""
    for step in range(STEPS):
        assert max_diff(r0["local"][step], r1["local"][step]) > 1e-4, "each rank draws its own video"
        assert max_diff(r0["reduced"][step], r1["reduced"][step]) == 0.0
        if step == 1:  # rank 1 had no gradient: the mean is over the ranks that have one
            assert max_diff(r0["reduced"][step], r0["local"][step]) == 0.0
        else:
            mean = [(a + b) / 2 for a, b in zip(r0["local"][step], r1["local"][step])]
            assert max_diff(r0["reduced"][step], mean) == 0.0
    assert r0["prompts"] != r1["prompts"]


def test_adapters_are_identical_on_both_ranks_after_every_step(plain):
    r0, r1 = plain
    for step in range(STEPS):
        assert max_diff(r0["adapter_before"][step], r1["adapter_before"][step]) == 0.0
    assert max_diff(r0["final"], r1["final"]) == 0.0
    assert max(float(p.abs().max()) for p in r0["final"][:3]) > 0, "the ups moved from zero: it trained"


def test_rank_zero_writes_the_resume_file_the_comfyui_lora_and_the_chart(plain):
    folder = Path(plain[0]["out"]) / "toy"
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["resume.safetensors", "summary.txt", "toy.safetensors", "training_curve.png"], names
    with safe_open(str(folder / "toy.safetensors"), "pt") as f:
        meta, keys = f.metadata(), set(f.keys())
        up = f.get_tensor("diffusion_model.blocks.0.lora_up.weight")
    assert meta["personalvideo.world_size"] == "2" and meta["personalvideo.trained_steps"] == str(STEPS)
    assert meta["personalvideo.gate_start"] == "0.75" and "diffusion_model.blocks.2.lora_down.weight" in keys
    assert torch.equal(up, plain[0]["final"][0])  # LoRAParameters: ups first, in key order
    from PIL import Image

    with Image.open(folder / "training_curve.png") as img:
        assert img.size == (768, 384)
    assert "processes: 2" in (folder / "summary.txt").read_text()


def test_fsdp2_sharded_run_equals_the_unsharded_one(plain, tmp_path):
    sharded = launch(tmp_path, STEPS, "fsdp")  # the worker asserts the base weights became DTensor shards
    for rank in (0, 1):
        assert max_diff(sharded[rank]["final"], plain[rank]["final"]) == 0.0
        for step in range(STEPS):
            assert max_diff(sharded[rank]["reduced"][step], plain[rank]["reduced"][step]) == 0.0
    assert sharded[1]["skipped_local"][1] == "no face in any reward frame"


def test_resumed_two_process_run_equals_an_uninterrupted_one(plain, tmp_path):
    first = launch(tmp_path, 2)
    assert first[0]["resumed_from"] == 0
    resumed = launch(tmp_path, STEPS)
    assert resumed[0]["resumed_from"] == 2 and resumed[1]["resumed_from"] == 2
    for rank in (0, 1):
        assert max_diff(resumed[rank]["final"], plain[rank]["final"]) == 0.0
        assert max_diff(resumed[rank]["reduced"][-1], plain[rank]["reduced"][-1]) == 0.0
    assert resumed[0]["prompts"] == plain[0]["prompts"]  # rank 0's history, continued from its resume file
