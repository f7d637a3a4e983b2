"""Every file in workflows/ runs in real ComfyUI, converted from the UI format by dev/ui_workflow.py.

The tiny test models are put under the file names the workflows use (the official ComfyUI downloads);
the small real w600k_mbf/SCRFD pack is put under models/insightface/models/antelopev2. Substituted, and
said here: the text-encoder loader nodes (no tiny UMT5 / llava exists) become the dev CLIP stand-in, the
HPS model file is a tiny random OpenCLIP of the real layout, and sizes and step counts are shrunk so a
workflow runs in seconds. Everything else runs as the file says.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest

from dev import tiny_models
from dev.comfy_runtime import GraphError
from dev.ui_workflow import ui_to_api
from dev.face_assets import make_dlib_folder, make_pack, photo_path

WORKFLOWS = sorted((Path(__file__).resolve().parents[2] / "workflows").glob("*.json"))
@pytest.fixture(scope="module")
def rt(comfy, tmp_path_factory):
    tiny_models.install_for_workflows(comfy.base_dir / "models", tmp_path_factory.mktemp("clip_cfg"))
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


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_workflow_runs(rt, path):
    prompt = tiny_models.for_tiny_models(ui_to_api(load(path)))
    outputs = rt.run(prompt)
    assert outputs, f"{path.name}: no output node produced anything"
    if any(n["class_type"] == "PersonalVideoTrainIdentityAdapter" for n in prompt.values()):
        shown = [o["text"][0] for o in outputs.values() if "text" in o]  # core Preview as Text on the summary
        assert any("updated the adapter" in s for s in shown), f"{path.name}: the trainer's summary is not shown"
    if "generate" in path.stem:
        prefix = {"train_and_generate_wan22_a14b": "wan22_a14b",
                  "generate_two_people_routed_wan21": "two_people_wan21"}.get(path.stem, "wan21")
        videos = list((rt.base_dir / "output" / "personalvideo").glob(f"{prefix}_*.webp"))
        assert videos, "the generate workflows must write a video"
    if path.stem == "evaluate_video":
        table = next(o["text"][0] for o in outputs.values() if "text" in o)
        face_sim = float(table.split("Face Sim (x100, 16 frames)")[1].split()[0])
        assert face_sim > 50, table  # the video shows the reference person (another photo of him)
    if path.stem == "generate_two_people_routed_wan21":
        check_two_people(outputs)
    if path.stem == "train_and_generate_wan22_a14b":
        check_a14b(rt, prompt, outputs)
    if path.stem.startswith("train_identity_adapter_"):
        family = path.stem.removeprefix("train_identity_adapter_")
        assert list((rt.model_dir("loras") / "personalvideo").glob(f"identity_{family}_*.safetensors"))


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


def check_a14b(rt, prompt: dict, outputs: dict) -> None:
    """The A14B graph: the adapter is trained, saved and gated for the low-noise expert only, and the trainer
    samples like the graph's two KSamplerAdvanced (the bit-for-bit check is tests/nodes/test_trainer_a14b.py,
    on a graph built like this one)."""
    from safetensors import safe_open

    samplers = {n["inputs"]["start_at_step"]: n["inputs"] for n in prompt.values()
                if n["class_type"] == "KSamplerAdvanced"}
    train = next(n["inputs"] for n in prompt.values() if n["class_type"] == "PersonalVideoTrainIdentityAdapter")
    high, low = (model_chain(prompt, samplers[k]["model"]) for k in sorted(samplers))
    assert [t for t, _ in high] == ["ModelSamplingSD3", "UNETLoader"] and "high_noise" in high[-1][1]["unet_name"]
    assert [t for t, _ in low] == ["PersonalVideoApplyIdentityAdapter", "ModelSamplingSD3", "UNETLoader"]
    assert "low_noise" in low[-1][1]["unet_name"]
    assert model_chain(prompt, train["high_noise_model"]) == high and model_chain(prompt, train["model"]) == low[1:]
    for key in ("cfg", "sampler_name", "scheduler"):
        assert all(s[key] == train[key] for s in samplers.values()), key
    summary = next(o["text"][0] for o in outputs.values() if "text" in o and "experts:" in o["text"][0])
    assert "high-noise steps 0-3 (no adapter), low-noise steps 4-7" in summary, summary  # 8 tiny steps, split at 4
    saved = sorted((rt.model_dir("loras") / "personalvideo").glob("identity_wan22_a14b_*.safetensors"))
    assert saved, "the A14B workflow must save the adapter"
    with safe_open(str(saved[-1]), "pt") as f:
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
    with pytest.raises(GraphError, match=rf"'{key}'|{key}"):
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
