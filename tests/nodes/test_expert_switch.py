"""The expert split as the user's graph has it (Wan 2.2 A14B), in real ComfyUI on the tiny experts.

ComfyUI's current Wan 2.2 14B template samples with shift 5 and hands over at step 10 of 20 (the first
KSamplerAdvanced's end_at_step); the pack's earlier workflow used shift 8. The trainer node is set as a user would
from that graph (its sampling_steps, sampler, scheduler and cfg, and expert_switch_step = end_at_step) and trains
one step; the high-noise part of its run must equal the first KSamplerAdvanced's output bit for bit, at shift 5
and at shift 8. The boundary (a timestep fraction) lands on another step at another shift: 0.9 splits at 10 at
shift 8 and at 8 at shift 5, which the summary names as the graph's end_at_step.
"""

from __future__ import annotations

import shutil

import pytest
import torch

import wan22_template as tpl
from dev.comfy_runtime import GraphError
from dev.face_assets import make_pack, photo_path
from graphs import Graph, pack_module

STEPS, SPLIT, CFG = 20, 10, 3.5


@pytest.fixture(scope="module")
def rt(comfy):
    tpl.install(comfy)
    make_pack(comfy.model_dir("insightface") / "models", "vectron_s")
    shutil.copy(photo_path("obama.jpg"), comfy.base_dir / "input" / "obama.jpg")
    return comfy


def trainer_graph(shift: float, switch_step: int | None, boundary: float = 0.875, steps: int = STEPS,
                  run_name: str = "switch", speed_lora: bool = False, cfg: float = CFG, gate_start: float = 0.75):
    """The template's loaders and a trainer set from its samplers: one training step. ``switch_step`` None: the
    input left out (as API prompts saved before it existed)."""
    g = Graph()
    experts = tpl.expert_models(g, shift, speed_lora)
    idm = g.add("PersonalVideoLoadIdentityRewardModel", pack="vectron_s", det_size=640, det_threshold=0.05)
    ref = g.add("PersonalVideoLoadReferenceFaces", identity_reward=idm, images=g.add("LoadImage", image="obama.jpg"),
                augmentations=2, crop_jitter=0.05, colour_jitter=0.1, seed=0)
    bank = g.add("PersonalVideoPromptBank", subject="a man", user_prompts="", negative_prompt=tpl.NEGATIVE,
                 use_built_in=True)
    extra = {} if switch_step is None else {"expert_switch_step": switch_step}
    tr = g.add("PersonalVideoTrainIdentityAdapter", model=experts["low_noise"], clip=tpl.clip_standin(g),
               vae=g.add("VAELoader", vae_name="tiny_wan_vae.safetensors"), reference=ref, identity_reward=idm,
               prompt_bank=bank, steps=1, learning_rate=1e-2, rank=4, alpha=4.0, layers="attention",
               gate_start=gate_start, sampling_steps=steps, sampler_name="euler", scheduler="simple", cfg=cfg,
               width=tpl.SIZE, height=tpl.SIZE, frames=tpl.FRAMES, frames_per_reward=2, icr_weight=1.0,
               scr_weight=1.0, scr_temperature=100.0, backprop_last_k=0, checkpoint_blocks=True, max_grad_norm=1.0,
               seed=0, save_every=0, run_name=run_name, resume=False, high_noise_model=experts["high_noise"],
               expert_boundary=boundary, **extra)
    g.capture([tr[0], 2], "summary")
    return g


def train_recording_high_noise_part(rt, g: Graph) -> tuple[str, list[dict]]:
    """Run the trainer graph; returns its summary and, per high-noise part it sampled, the prompt, the noise seed
    and the LATENT samples it handed to the low-noise expert."""
    backend_cls = pack_module("nodes.runtime.backend").ComfyBackend
    expert_cls = pack_module("nodes.runtime.expert_split").HighNoiseExpert
    run, part = backend_cls.run, expert_cls.high_noise_part
    record: list[dict] = []

    def recording_run(self, prompt, seed, fn):
        record.append({"prompt": prompt, "seed": seed})
        return run(self, prompt, seed, fn)

    def recording_part(self, *args, **kwargs):
        out = part(self, *args, **kwargs)
        record[-1]["high"] = out.detach().clone()
        return out

    backend_cls.run, expert_cls.high_noise_part = recording_run, recording_part
    try:
        rt.run(g.nodes)
    finally:
        backend_cls.run, expert_cls.high_noise_part = run, part
    return rt.captured()["summary"], record


@pytest.mark.parametrize("shift", [5.0, 8.0])
def test_trainer_set_from_the_template_graph_runs_its_first_sampler_bit_for_bit(rt, shift):
    summary, record = train_recording_high_noise_part(rt, trainer_graph(shift, SPLIT, run_name=f"switch_{shift:g}"))
    assert len(record) == 1 and "high" in record[0], record
    assert "high-noise steps 0-9 (no adapter), low-noise steps 10-19" in summary, summary
    assert "split at step 10 of 20 by expert_switch_step 10" in summary, summary
    graph = tpl.two_samplers(rt, shift, STEPS, SPLIT, CFG, prompt=record[0]["prompt"], seed=record[0]["seed"])
    assert torch.equal(record[0]["high"], graph["high"]), float((record[0]["high"] - graph["high"]).abs().max())


def test_the_boundary_lands_on_another_step_at_another_shift_and_the_summary_says_which(rt):
    """0.9 reproduced the old workflow's split (shift 8) only: at the template's shift 5 it hands over at step 8."""
    summaries = {}
    for shift in (5.0, 8.0):
        summary, record = train_recording_high_noise_part(
            rt, trainer_graph(shift, None, boundary=0.9, run_name=f"boundary_{shift:g}"))
        summaries[shift] = summary
        b = 8 if shift == 5.0 else 10
        assert f"high-noise steps 0-{b - 1} (no adapter), low-noise steps {b}-19" in summary, summary
        assert f"by expert_boundary 0.9 (in the graph: the first KSamplerAdvanced's end_at_step {b})" in summary
        graph = tpl.two_samplers(rt, shift, STEPS, b, CFG, prompt=record[0]["prompt"], seed=record[0]["seed"])
        assert torch.equal(record[0]["high"], graph["high"])
    # and the template's own split differs from the boundary's at shift 5: the runs are not the same
    other = tpl.two_samplers(rt, 5.0, STEPS, SPLIT, CFG)
    assert not torch.equal(other["high"], tpl.two_samplers(rt, 5.0, STEPS, 8, CFG)["high"])


def test_switch_step_equals_the_split_at_any_step_count_with_the_speed_loras(rt):
    """The template's Lightning switch: 4 steps split at 2, cfg 1, speed LoRAs on both experts."""
    summary, record = train_recording_high_noise_part(
        rt, trainer_graph(5.0, 2, steps=4, run_name="switch_4step", speed_lora=True, cfg=1.0))
    assert "high-noise steps 0-1 (no adapter), low-noise steps 2-3" in summary, summary
    graph = tpl.two_samplers(rt, 5.0, 4, 2, 1.0, speed_lora=True, prompt=record[0]["prompt"], seed=record[0]["seed"])
    assert torch.equal(record[0]["high"], graph["high"])


def test_a_switch_step_that_leaves_the_low_noise_expert_nothing_is_refused(rt):
    with pytest.raises(GraphError, match=r"expert_switch_step: got 20, but sampling_steps is 20, so the low-noise "
                                         r"expert \(the one trained\) would run no step\. Expected 1-19"):
        rt.run(trainer_graph(5.0, 20, run_name="switch_refused").nodes)


def test_a_gate_start_before_the_switch_step_is_refused_naming_it(rt):
    with pytest.raises(GraphError, match=r"gate_start: got 0\.4, which opens the gate at step 8 of 20, but steps "
                                         r"0-9 belong to the high-noise expert \(expert_switch_step 10\)"):
        rt.run(trainer_graph(5.0, SPLIT, run_name="switch_gate_refused", gate_start=0.4).nodes)
