"""FSDP2 lowers the load-time peak: with ``[compute] fsdp = true`` no rank but 0 holds a whole block while loading.

Two real processes (torchrun, gloo on the CPU) build the tiny random diffusers models (scaleout/tiny.py) the way
the train command does (tests/scaleout/dist_build_worker.py says what each rank records). Before the fix every
rank constructed the whole model and sharded it afterwards: rank 1's constructed models held all their block
weights, which the first test refuses (checked against that code once, when this test was written).
"""

from __future__ import annotations


import pytest
import torch

from two_ranks import run_two_ranks

WORKER = "tests.scaleout.dist_build_worker"  # run as a module from the repository root
TINY_CASES = ("wan_a14b", "hunyuan_video", "animatediff")
EXPECTED_MODELS = {"wan_a14b": ["WanTransformer3DModel"] * 2, "hunyuan_video": ["HunyuanVideoTransformer3DModel"],
                   "animatediff": ["UNetMotionModel"], "wan_folder": ["WanTransformer3DModel"]}


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("fsdp_load")
    run_two_ranks("-m", WORKER, str(out))
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in (0, 1)]


def test_only_rank_zero_ever_builds_a_whole_model_and_lets_it_go(ranks):
    r0, r1 = ranks
    for case in TINY_CASES:
        # rank 1 constructs every model empty (parameters on meta): no block weight ever takes memory there
        assert [c["real_block_bytes"] for c in r1[case]["constructed"]] == [0] * len(EXPECTED_MODELS[case]), case
        # rank 0 reads each transformer's weights once (its whole CPU copy) and frees that copy after loading
        whole = [c for c in r0[case]["constructed"] if c["real_block_bytes"] > 0]
        assert sorted(c["class"] for c in whole) == EXPECTED_MODELS[case], case
        assert not any(c["alive"] for c in whole), case
        assert len(r0[case]["constructed"]) == 2 * len(EXPECTED_MODELS[case]), case  # + its own empty model


def test_each_rank_holds_about_half_of_every_blocks_weights_after_the_build(ranks):
    for rank in ranks:
        for case, result in rank.items():
            assert [h["class"] for h in result["held"]] == EXPECTED_MODELS[case], case  # A14B: both experts
            for held in result["held"]:
                assert held["full"] > 0 and held["local"] <= 0.6 * held["full"], (case, held)
            assert result["sharded"] and all(result["sharded"]), case


@pytest.mark.parametrize("case", [*TINY_CASES, "wan_folder"])
def test_the_sharded_model_equals_the_whole_one(ranks, case):
    for rank in ranks:
        assert rank[case]["equal"] == {"weights": True, "adapter": True, "video": True}, case
