"""IResNet-100 (the antelopev2 / glintr100 architecture), exported the way insightface exports it, random weights.

The full 3-13-30-3 depth is used (export about 4 s, 65 M parameters on 2 CPU cores).
"""

from __future__ import annotations

import collections
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from dev.face_assets import load_photo, make_pack
from iresnet import IResNet, export_like_insightface, randomise
from personalvideo.training.identity.arcface import ArcFaceTorch
from personalvideo.training.identity.reward import load_identity_reward_model
from personalvideo.training.identity.reference import build_reference


def _recognizer(path) -> ArcFaceTorch:
    """The differentiable recognizer of an ONNX file, as the reward model builds it from its pack."""
    return ArcFaceTorch(onnx.load(str(path)), Path(path).name)


@pytest.fixture(scope="module")
def r100(tmp_path_factory):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice
        net = randomise(IResNet((3, 13, 30, 3)))
        path = export_like_insightface(net, tmp_path_factory.mktemp("r100") / "glintr100.onnx")
    return net, path


def test_iresnet100_onnx_loads_and_matches_onnxruntime(r100):
    _, path = r100
    ops = collections.Counter(n.op_type for n in onnx.load(str(path)).graph.node)
    assert ops["BatchNormalization"] == 51 and ops["PRelu"] == 50 and ops["Add"] == 49  # pre-activation blocks
    rec = _recognizer(path)
    assert rec.embedding_dim == 512 and rec.input_mean == 127.5
    crops = torch.rand(3, 3, 112, 112, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = rec(crops).numpy()
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    blob = ((crops.numpy() * 255 - 127.5) / 127.5).astype(np.float32)
    ref = np.concatenate([sess.run(None, {"data": blob[i:i + 1]})[0] for i in range(3)])
    # Random weights give embeddings of norm ~1e4 (real ArcFace: ~20-30): compare relative to the norm,
    # and the unit embeddings the reward uses element-wise.
    rel = np.abs(ours - ref).max() / np.abs(ref).max()
    assert rel <= 1e-5, rel
    unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)
    assert np.abs(unit(ours) - unit(ref)).max() <= 1e-4
    assert np.abs(ours - ref).max() < 1e-4 * np.abs(ref).max()
    # Not a trivially constant network: different crops give different embeddings.
    assert np.abs(unit(ref)[0] - unit(ref)[1]).max() > 1e-2


def test_pack_with_iresnet_recognizer_is_preferred_and_differentiable(r100, tmp_path):
    _, path = r100
    pack = make_pack(tmp_path, "antelope_like", files=("scrfd_500m_bnkps.onnx", "w600k_mbf.onnx"))
    (pack / "glintr100.onnx").symlink_to(path)
    model = load_identity_reward_model(pack)
    assert model.recognizer.module.source == "glintr100.onnx"  # insightface's pack order: glintr100 first
    frame = load_photo("yaoming.jpg").requires_grad_(True)
    res = model.reward(frame[None], torch.nn.functional.normalize(torch.randn(512), dim=0))
    res.loss.backward()
    assert res.frames_with_face == 1 and torch.isfinite(res.loss) and frame.grad.abs().sum() > 0


def test_a_reference_refuses_another_recognizer_but_not_a_copy_of_its_own(r100, tmp_path):
    _, path = r100
    mbf = load_identity_reward_model(make_pack(tmp_path, "vectron_s"))
    mbf_copy = load_identity_reward_model(make_pack(tmp_path, "same_weights_other_folder"))
    other = make_pack(tmp_path, "antelope_like", files=("scrfd_500m_bnkps.onnx", "w600k_mbf.onnx"))
    (other / "glintr100.onnx").symlink_to(path)
    r100_model = load_identity_reward_model(other)
    reference = build_reference(mbf, [load_photo("obama.jpg")], augmentations=1)
    reference.check_recognizer(mbf)
    reference.check_recognizer(mbf_copy)  # same weights in another folder: comparable
    assert mbf.fingerprint == mbf_copy.fingerprint != r100_model.fingerprint
    with pytest.raises(ValueError, match="reference: built with the recognizer of 'vectron_s'.*'antelope_like'"):
        reference.check_recognizer(r100_model)
