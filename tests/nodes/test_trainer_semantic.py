"""The trainer node's semantic reward (SCR) in real ComfyUI: the tiny random OpenCLIP in HPSv2's layout built by the
Load Semantic Reward Model node, on the trainer graph of test_trainer_comfy.py (tests/trainer_graph.py)."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open

from dev.tiny_models import TINY_HPS_ARCH, register_tiny_hps_config, write_tiny_hps_model_file
from graphs import pack_module
from trainer_graph import rt, train_graph  # noqa: F401 (rt: the session fixture)


def test_semantic_reward_on_trains_with_the_kl_of_its_scores(rt, tmp_path_factory, monkeypatch):
    """SCR through the node-built (tiny random OpenCLIP) semantic reward: each step's recorded SCR term is the KL
    between the softmaxed scores of the two branches, recomputed here in float64 from the scores the model gave
    (source: scored without gradient, tuned: with), and it enters the loss with the identity term."""
    import json

    import numpy as np

    register_tiny_hps_config(tmp_path_factory.mktemp("clip_cfg"))
    write_tiny_hps_model_file(rt.model_dir("hpsv2") / "tiny_hps_trainer.pt")
    model_cls, scores = pack_module("training.semantic.reward").SemanticRewardModel, []
    score = model_cls.score

    def recorded(self, frames, prompt):
        out = score(self, frames, prompt)
        scores.append(("tuned" if torch.is_grad_enabled() else "source", out.detach().double().cpu().numpy()))
        return out

    monkeypatch.setattr(model_cls, "score", recorded)
    g, tr, *_ = train_graph("wan21", steps=2, run_name="scr")
    sem = g.add("PersonalVideoLoadSemanticRewardModel", model_file="tiny_hps_trainer.pt", architecture=TINY_HPS_ARCH)
    g.nodes[tr[0]]["inputs"]["semantic_reward"] = sem
    g.capture([tr[0], 2], "summary")
    rt.run(g.nodes)
    summary = rt.captured()["summary"]
    assert "SCR: on, KL last fifth" in summary and "2 updated the adapter" in summary, summary
    with safe_open(str(rt.base_dir / "output" / "personalvideo_training" / "scr.safetensors"), "pt") as f:
        history = json.loads(f.metadata()["history"])
    assert [kind for kind, _ in scores] == ["source", "tuned"] * 2, [kind for kind, _ in scores]

    def softmax(x):
        e = np.exp(100.0 * (x - x.max()))  # scr_temperature 100
        return e / e.sum()

    kls = []
    for step, record in enumerate(history):
        (_, source), (_, tuned) = scores[2 * step: 2 * step + 2]
        p, q = softmax(tuned), softmax(source)
        kls.append(float(np.sum(p * np.log(p / q))))
        # float32 loss: the sum holds to rounding, far below the SCR term of step 1
        assert record["loss"] == pytest.approx(record["icr_loss"] + record["scr_loss"], rel=1e-6, abs=1e-7)
    # Step 0: a fresh adapter (up = 0) gives the tuned branch the source branch's frames (up to float rounding of
    # the recomputed branch: 3e-8 measured), so the same scores and a KL of 0.
    assert np.allclose(scores[0][1], scores[1][1], rtol=1e-5) and history[0]["scr_loss"] == pytest.approx(0, abs=1e-7)
    # Step 1: one update moved the tuned frames (KL 5.3e-5 measured on 0.3.75). The trainer's KL is float32: its
    # logits (100 x scores, up to ~16) round at ~1e-6 and KL's first-order terms cancel, so it holds to about 1e-6
    # absolute (measured 1.0e-7 off); the check needs the KL well above that.
    assert kls[1] > 2e-5 and history[1]["scr_loss"] == pytest.approx(kls[1], abs=2e-6), (history[1], kls)
    assert f"KL last fifth {max(history[-1]['scr_loss'], 0.0):.4f}" in summary, summary
