"""Every file in workflows/ runs in real ComfyUI, converted from the UI format by dev/ui_workflow.py.

The tiny test models are put under the file names the workflows use (the official ComfyUI downloads);
the small real w600k_mbf/SCRFD pack is put under models/insightface/models/antelopev2. Substituted, and
said here: the text-encoder loader nodes (no tiny UMT5 / llava / T5 exists) become the dev CLIP stand-in, the
HPS model file is a tiny random OpenCLIP of the real layout, the 4-step speed LoRAs are random LoRAs, VAEs
that ComfyUI builds at a fixed full size are built at the tiny files' sizes (dev/tiny_workflow_families.py),
and sizes and step counts are shrunk so a workflow runs in seconds. Everything else runs as the file says.
CogVideoX exists only in newer ComfyUI (0.33 has it, 0.3.75 not): its workflow is skipped, saying so, where
this ComfyUI lacks it.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest

from dev import tiny_models, tiny_workflow_families
from dev.comfy_runtime import GraphError
from dev.face_assets import make_dlib_folder, make_pack, photo_path
from dev.ui_workflow import ui_to_api
from families import AVAILABLE
from workflow_checks import capture_saved_videos, check_adapter, check_video, files_under, written

WORKFLOWS = sorted((Path(__file__).resolve().parents[2] / "workflows").glob("*.json"))
# Workflows of a family this ComfyUI lacks (families.AVAILABLE reads its source tree): skipped with the reason.
NEEDS_FAMILY = {"train_and_generate_cogvideox": "cogvideox"}
# Graphs built like ComfyUI's templates (dev/family_workflows.py, the A14B ones): their trainer samples as they do.
# (train_and_generate_wan21 predates them: it trains at 20 steps, cfg 5, and generates at 30, cfg 6.)
BUILT_FROM_TEMPLATES = {f"train_and_generate_{name}" for name in (
    "wan22_a14b", "wan22_a14b_4step_lora", "wan22_5b", "hunyuan_video_15", "ltxv", "cogvideox")}


def runnable(path: Path):
    family = NEEDS_FAMILY.get(path.stem)
    return pytest.param(path, id=path.stem, marks=pytest.mark.skipif(
        family is not None and family not in AVAILABLE,
        reason=f"{family}: not in this ComfyUI (CogVideoX arrived after 0.3.75; runs on 0.33)"))


@pytest.fixture(scope="module")
def rt(comfy, tmp_path_factory):
    tiny_models.install_for_workflows(comfy.base_dir / "models", tmp_path_factory.mktemp("clip_cfg"))
    tiny_workflow_families.install(comfy.base_dir / "models")
    make_pack(comfy.model_dir("insightface") / "models", "antelopev2")
    tiny_models.write_random_lora("wan21", comfy.model_dir("loras") / "personalvideo"
                                  / "identity_wan21_00001_.safetensors", std=0.1)
    shutil.copy(photo_path("obama.jpg"), comfy.base_dir / "input" / "reference.jpg")
    for person, (photo, seed) in enumerate((("obama2.jpg", 1), ("biden.jpg", 3)), start=1):  # the two-people graph
        shutil.copy(photo_path(photo), comfy.base_dir / "input" / f"person_{person}.jpg")
        tiny_models.write_random_lora("wan21", comfy.model_dir("loras") / "personalvideo"
                                      / f"identity_person_{person}_00001_.safetensors", seed=seed, std=0.1)
    make_pack(comfy.model_dir("insightface") / "models", "buffalo_l")
    write_test_webp(comfy.base_dir / "input" / "personalvideo_wan21.webp")
    return comfy


def person_frames(frames: int = 12):
    """Another photo of the reference person, drifting sideways, as RGB arrays."""
    import numpy as np
    from PIL import Image

    photo = np.asarray(Image.open(photo_path("obama2.jpg")).convert("RGB").resize((320, 400)))
    out = []
    for i in range(frames):
        frame = np.zeros((400, 384, 3), dtype=np.uint8)
        frame[:, 4 * i: 4 * i + 320] = photo
        out.append(frame)
    return out


def write_test_webp(path: Path) -> None:
    """An animated WEBP as core SaveAnimatedWEBP writes them (what the evaluate workflow loads)."""
    from PIL import Image

    images = [Image.fromarray(f) for f in person_frames()]
    images[0].save(path, save_all=True, append_images=images[1:], duration=62, quality=95)


def write_test_video(path: Path, frames: int = 12) -> None:
    """A real MP4 (PyAV, as ComfyUI's own video nodes use) of ``person_frames``."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=16)
        stream.width, stream.height, stream.pix_fmt = 384, 400, "yuv420p"
        for frame in person_frames(frames):
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def test_every_workflow_has_a_note_and_only_core_or_pack_nodes(comfy):
    import nodes

    assert len(WORKFLOWS) >= 4
    for path in WORKFLOWS:
        wf = load(path)
        types = {n["type"] for n in wf["nodes"]}
        assert "Note" in types, path.name
        unknown = {t for t in types - {"Note"} if t not in nodes.NODE_CLASS_MAPPINGS}
        assert not unknown and not any(t.startswith("PersonalVideoDev") for t in types), (path.name, unknown)


@pytest.mark.parametrize("path", [runnable(p) for p in WORKFLOWS])
def test_workflow_runs(rt, path):
    prompt = tiny_models.for_tiny_models(ui_to_api(load(path)))
    videos = capture_saved_videos(prompt)
    for key in videos:
        rt.captured().pop(key, None)  # an earlier workflow's capture under the same key
    output, loras = rt.base_dir / "output", rt.model_dir("loras")
    before = files_under(output) | files_under(loras)
    with tiny_workflow_families.tiny_vae_sizes(prompt):
        outputs = rt.run(prompt)
    assert outputs, f"{path.name}: no output node produced anything"
    if any(n["class_type"] == "PersonalVideoTrainIdentityAdapter" for n in prompt.values()):
        shown = [o["text"][0] for o in outputs.values() if "text" in o]  # core Preview as Text on the summary
        assert any("updated the adapter" in s for s in shown), f"{path.name}: the trainer's summary is not shown"
    if "generate" in path.stem:
        assert videos, "the generate workflows must save a video"
        for key, prefix in videos.items():
            check_video(rt.captured()[key], written(before, output, f"{prefix}_*.webp"), prompt)
    if path.stem in BUILT_FROM_TEMPLATES:
        check_trainer_set_as_the_graph_samples(ui_to_api(load(path)))
    if path.stem == "evaluate_video":
        table = next(o["text"][0] for o in outputs.values() if "text" in o)
        face_sim = float(table.split("Face Sim (x100, 16 frames)")[1].split()[0])
        assert face_sim > 50, table  # the video shows the reference person (another photo of him)
    saved = written(before, loras / "personalvideo", "identity_*.safetensors")
    if path.stem.startswith("train_and_generate_wan22_a14b"):
        check_a14b(rt, prompt, outputs, saved)
    if path.stem == "generate_two_people_routed_wan21":
        check_two_people(outputs)
    if path.stem.startswith("train_identity_adapter_"):
        family = path.stem.removeprefix("train_identity_adapter_")
        check_adapter([f for f in saved if f.name.startswith(f"identity_{family}_")])
        assert len(saved) == 1, saved


def check_two_people(outputs: dict) -> None:
    """The random tiny model draws no face, so the routing finds none at the gate (and says so in the log: the routing
    tests check it) and the evaluation matches no face to either person; both people are scored."""
    table = next(o["text"][0] for o in outputs.values() if "text" in o and "identity bleed rate" in o["text"][0])
    assert "Face Sim identity 1 (" in table and "Face Sim identity 2 (" in table, table


def model_chain(prompt: dict, link) -> list[tuple[str, dict]]:
    """The nodes a MODEL link passes through, from the sampler back to its loader."""
    chain = []
    while link is not None:
        node = prompt[link[0]]
        chain.append((node["class_type"], node["inputs"]))
        link = node["inputs"].get("model")
    return chain


def check_trainer_set_as_the_graph_samples(prompt: dict) -> None:
    """The file as written (not shrunk): the trainer trains on the MODEL the gate gets (or that MODEL before a style
    LoRA the graph adds for generation) and samples as the graph's last sampler does (sampler, scheduler, steps,
    cfg; LTX-Video's LTXVScheduler has no KSampler name: its step count is compared, and the trainer's scheduler is
    simple, as the note says)."""
    of = {n["class_type"]: n["inputs"] for n in prompt.values()}
    train, gate = of["PersonalVideoTrainIdentityAdapter"], of["PersonalVideoApplyIdentityAdapter"]
    link = gate["model"]
    while link != train["model"]:
        assert prompt[link[0]]["class_type"] == "LoraLoaderModelOnly", (link, train["model"])
        link = prompt[link[0]]["inputs"]["model"]
    if "KSamplerAdvanced" in of or "KSampler" in of:
        sampler = of.get("KSamplerAdvanced") or of["KSampler"]
        sampling = (sampler["sampler_name"], sampler["scheduler"], sampler["steps"], sampler["cfg"])
    elif "SamplerCustomAdvanced" in of:
        sched = of["BasicScheduler"]
        sampling = (of["KSamplerSelect"]["sampler_name"], sched["scheduler"], sched["steps"], of["CFGGuider"]["cfg"])
    else:
        sampling = (of["KSamplerSelect"]["sampler_name"], "simple", of["LTXVScheduler"]["steps"],
                    of["SamplerCustom"]["cfg"])
    assert (train["sampler_name"], train["scheduler"], train["sampling_steps"], train["cfg"]) == sampling


def check_a14b(rt, prompt: dict, outputs: dict, saved: list[Path]) -> None:
    """The A14B graph: the adapter is trained, saved and gated for the low-noise expert only, and the trainer
    samples like the graph's two KSamplerAdvanced (the bit-for-bit check is tests/nodes/test_trainer_a14b.py,
    on a graph built like this one)."""
    from safetensors import safe_open

    samplers = {n["inputs"]["start_at_step"]: n["inputs"] for n in prompt.values()
                if n["class_type"] == "KSamplerAdvanced"}
    train = next(n["inputs"] for n in prompt.values() if n["class_type"] == "PersonalVideoTrainIdentityAdapter")
    high, low = (model_chain(prompt, samplers[k]["model"]) for k in sorted(samplers))
    # the template's chain per expert; with the Lightning switch on, its speed LoRA before ModelSamplingSD3
    lora = ["LoraLoaderModelOnly"] if any(n["class_type"] == "LoraLoaderModelOnly" for n in prompt.values()) else []
    assert [t for t, _ in high] == ["ModelSamplingSD3", *lora, "UNETLoader"]
    assert "high_noise" in high[-1][1]["unet_name"]
    assert [t for t, _ in low] == ["PersonalVideoApplyIdentityAdapter", "ModelSamplingSD3", *lora, "UNETLoader"]
    assert "low_noise" in low[-1][1]["unet_name"]
    assert model_chain(prompt, train["high_noise_model"]) == high and model_chain(prompt, train["model"]) == low[1:]
    for key in ("cfg", "sampler_name", "scheduler"):
        assert all(s[key] == train[key] for s in samplers.values()), key
    # the trainer splits where the graph does: its switch step is the first sampler's end_at_step
    b, n = samplers[0]["end_at_step"], train["sampling_steps"]
    assert train["expert_switch_step"] == b and samplers[b]["steps"] == n
    summary = next(o["text"][0] for o in outputs.values() if "text" in o and "experts:" in o["text"][0])
    assert f"high-noise steps 0-{b - 1} (no adapter), low-noise steps {b}-{n - 1}" in summary, summary
    check_adapter(saved)
    name = next(n["inputs"]["filename_prefix"] for n in prompt.values()
                if n["class_type"] == "PersonalVideoSaveIdentityAdapter").rsplit("/", 1)[1]
    assert saved[0].name.startswith(f"{name}_"), saved
    with safe_open(str(saved[0]), "pt") as f:
        meta, keys = f.metadata(), list(f.keys())
    assert meta["personalvideo.expert"] == "low_noise", meta
    # one set of LoRA weights, for one expert's attention layers (both experts have the same layer names)
    targets = [t for t in tiny_models.lora_targets("wan21") if "attn" in t]
    assert len(keys) == 2 * len(targets) + len([k for k in keys if k.endswith(".alpha")]), keys


def test_broken_workflows_fail_naming_the_node(rt):
    wf = load(next(p for p in WORKFLOWS if p.stem == "generate_with_identity_adapter_wan21"))
    unknown = copy.deepcopy(wf)
    node = next(n for n in unknown["nodes"] if n["type"] == "PersonalVideoApplyIdentityAdapter")
    node["type"] = "PersonalVideoNoSuchNode"
    with pytest.raises(ValueError, match=rf"node {node['id']} \(PersonalVideoNoSuchNode\).*unknown node type"):
        ui_to_api(unknown)

    missing = copy.deepcopy(wf)
    node = next(n for n in missing["nodes"] if n["type"] == "KSampler")
    model_slot = next(s for s in node["inputs"] if s["name"] == "model")
    model_slot["link"] = None
    with pytest.raises(ValueError, match=rf"node {node['id']} \(KSampler\).*'model' is not connected"):
        ui_to_api(missing)

    wrong_value = tiny_models.for_tiny_models(ui_to_api(wf))
    key = next(k for k, n in wrong_value.items() if n["class_type"] == "PersonalVideoApplyIdentityAdapter")
    wrong_value[key]["inputs"]["gate_mode"] = "sometimes"
    # ComfyUI's validation refuses the value naming the node and the input, or (a version that lets a combo value
    # through) the node itself does, naming the input.
    with pytest.raises(GraphError, match=rf"(node {key} \(PersonalVideoApplyIdentityAdapter\) failed: ValueError: "
                                         rf"gate_mode: got 'sometimes', expected one of|'{key}': \{{'errors': \[.*"
                                         rf"gate_mode: 'sometimes' not in)"):
        rt.run(wrong_value)


def test_evaluate_folder_script_scores_every_video(tmp_path):
    """scripts/evaluate_folder.py: batch evaluation from Python over a folder of real MP4 files."""
    import subprocess
    import sys

    videos = tmp_path / "videos"
    videos.mkdir()
    write_test_video(videos / "a.mp4")
    write_test_video(videos / "b.mp4", frames=6)
    write_test_webp(videos / "c.webp")
    (videos / "notes.txt").write_text("not a video")
    make_pack(tmp_path / "packs", "pack")
    make_dlib_folder(tmp_path / "dlib")
    script = Path(__file__).resolve().parents[2] / "scripts" / "evaluate_folder.py"
    out = subprocess.run([sys.executable, str(script), str(videos), "--reference", str(photo_path("obama.jpg")),
                          "--pack", str(tmp_path / "packs" / "pack"), "--dlib", str(tmp_path / "dlib")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["video"] for r in rows] == ["a.mp4", "b.mp4", "c.webp"]
    assert all(r["face_sim"] > 50 and r["no_face_rate"] == 0 for r in rows)
    assert all(r["face_distance_independent"] < 0.6 for r in rows), rows
