"""Which onnxruntime provider face detection uses, and what happens without onnxruntime.

The provider choice is a function of the providers onnxruntime reports, passed in explicitly here: this machine
has only the CPU wheel, so lists with CUDA / ROCm stand for what onnxruntime-gpu / onnxruntime-rocm report (no
session is created with them here; that the CUDA provider really runs only a GPU machine shows, see
benchmarks/gpu_check.sh). The CPU cases also run a real session.
"""

from __future__ import annotations

import sys

import pytest
from dev.face_assets import make_pack
from personalvideo.training.identity.detect import SCRFDDetector, import_onnxruntime, onnx_providers

GPU_ORT = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]


def test_gpu_provider_on_comfyuis_gpu_and_index():
    assert onnx_providers("cuda:1", GPU_ORT) == [("CUDAExecutionProvider", {"device_id": 1}), "CPUExecutionProvider"]
    assert onnx_providers("cuda", GPU_ORT) == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert onnx_providers(None, GPU_ORT) == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    rocm = ["ROCMExecutionProvider", "CPUExecutionProvider"]
    assert onnx_providers("cuda:0", rocm) == [("ROCMExecutionProvider", {"device_id": 0}), "CPUExecutionProvider"]


def test_cpu_when_comfyui_runs_on_cpu_or_onnxruntime_has_no_gpu_provider():
    assert onnx_providers("cpu", GPU_ORT) == ["CPUExecutionProvider"]  # ComfyUI --cpu with onnxruntime-gpu
    assert onnx_providers("cuda:0", ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]  # the CPU wheel


def test_real_session_on_this_machine_uses_what_it_asked_for(tmp_path):
    pack = make_pack(tmp_path)
    det = SCRFDDetector(pack / "scrfd_500m_bnkps.onnx", device="cpu")
    assert det.providers == ["CPUExecutionProvider"]
    assert onnx_providers("cpu") == ["CPUExecutionProvider"]


def test_without_onnxruntime_the_error_names_both_wheels(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # what Python does when the package is absent
    with pytest.raises(ImportError, match="onnxruntime-gpu.*onnxruntime.*Not both"):
        import_onnxruntime()
