"""ArcFace recognizers as differentiable torch modules, built from the same ONNX file onnxruntime runs.

onnxruntime gives no gradients, so the identity reward runs the recognizer in torch. Rather than
depend on onnx2torch (which must be installed ``--no-deps`` because its requirements can replace
torch), this module interprets the ONNX graph node by node with ``torch.nn.functional``. ArcFace
recognizers exported by insightface (MobileFaceNet ``w600k_mbf``, IResNet-50/100 ``w600k_r50`` /
``glintr100``) use a handful of operators: Conv, BatchNormalization, PRelu, Add, Flatten, Gemm
(plus Sub/Mul for the mxnet-era models); the interpreter covers those and a few shape operators, and
refuses anything else with a clear error rather than guessing.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..logs import pack_logger

log = pack_logger(__name__)


def _attrs(node) -> dict[str, Any]:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _conv(x, w, b=None, *, strides=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1), group=1,
          auto_pad=b"NOTSET", kernel_shape=None):
    if auto_pad not in (b"NOTSET", "NOTSET"):
        raise ValueError(f"Conv auto_pad={auto_pad!r} is not supported (exporters write explicit pads)")
    n = len(strides)
    begin, end = list(pads[:n]), list(pads[n:])
    if begin == end:
        return F.conv2d(x, w, b, tuple(strides), tuple(begin), tuple(dilations), group)
    pad = []
    for lo, hi in zip(reversed(begin), reversed(end)):
        pad += [lo, hi]
    return F.conv2d(F.pad(x, pad), w, b, tuple(strides), 0, tuple(dilations), group)


def _batchnorm(x, scale, bias, mean, var, *, epsilon=1e-5, momentum=0.9, spatial=1, training_mode=0):
    return F.batch_norm(x, mean, var, scale, bias, False, 0.0, epsilon)


def _prelu(x, slope):
    # ONNX PRelu broadcasts the slope numpy-style against x; the usual per-channel slope [C, 1, 1] on NCHW
    # is torch's own prelu (cheaper in memory for backward than the general form).
    if x.ndim == 4 and slope.ndim == 3 and slope.shape[0] == x.shape[1] and slope.shape[1:] == (1, 1):
        return F.prelu(x, slope.reshape(-1))
    return torch.where(x >= 0, x, x * slope)


def _flatten(x, *, axis=1):
    return x.reshape(int(math.prod(x.shape[:axis])), -1)


def _gemm(a, b, c=None, *, alpha=1.0, beta=1.0, transA=0, transB=0):
    a = a.t() if transA else a
    b = b.t() if transB else b
    y = alpha * (a @ b)
    return y if c is None else y + beta * c


def _reshape(x, shape, *, allowzero=0):
    dims = [int(d) for d in shape.tolist()]
    dims = [x.shape[i] if d == 0 and not allowzero else d for i, d in enumerate(dims)]
    return x.reshape(dims)


def _unsqueeze(x, axes=None, **attrs):
    axes = attrs.get("axes") if axes is None else axes.tolist()
    for a in sorted(int(a) for a in axes):
        x = x.unsqueeze(a)
    return x


def _gather(x, idx, *, axis=0):
    return torch.index_select(x, axis, idx.reshape(-1).long()).reshape(
        x.shape[:axis] + idx.shape + x.shape[axis + 1:])


OPS: dict[str, Callable[..., torch.Tensor]] = {
    "Conv": _conv,
    "BatchNormalization": _batchnorm,
    "PRelu": _prelu,
    "Relu": lambda x: F.relu(x),
    "Sigmoid": lambda x: torch.sigmoid(x),
    "Add": lambda a, b: a + b,
    "Sub": lambda a, b: a - b,
    "Mul": lambda a, b: a * b,
    "Div": lambda a, b: a / b,
    "Flatten": _flatten,
    "Gemm": _gemm,
    "MatMul": lambda a, b: a @ b,
    "Reshape": _reshape,
    "Identity": lambda x: x,
    "Dropout": lambda x, *rest, **kw: x,
    "GlobalAveragePool": lambda x: x.mean(dim=(2, 3), keepdim=True),
    "Transpose": lambda x, *, perm: x.permute(*perm),
    "Concat": lambda *xs, axis: torch.cat(xs, dim=axis),
    "Shape": lambda x: torch.tensor(x.shape, dtype=torch.int64, device=x.device),  # with x: Gather/Concat on GPU
    "Unsqueeze": _unsqueeze,
    "Gather": _gather,
}


class OnnxGraphModule(nn.Module):
    """Runs an ONNX graph of supported operators with torch ops; initializers become buffers.

    The module is differentiable with respect to its input (weights are frozen buffers).
    """

    def __init__(self, model, source: str = "<onnx>"):
        super().__init__()
        from onnx import numpy_helper

        graph = model.graph
        unsupported = sorted({n.op_type for n in graph.node if n.op_type not in OPS and n.op_type != "Constant"})
        if unsupported:
            raise ValueError(
                f"{source}: ONNX operators {unsupported} are not supported by the torch recognizer; "
                f"expected an insightface ArcFace recognizer (operators {sorted(OPS)})"
            )
        self._slots: dict[str, str] = {}
        for i, init in enumerate(graph.initializer):
            self._add_const(f"w{i}", init.name, numpy_helper.to_array(init))
        self.nodes: list[tuple[str, list[str], list[str], dict[str, Any]]] = []
        for j, node in enumerate(graph.node):
            attrs = _attrs(node)
            if node.op_type == "Constant":
                self._add_const(f"c{j}", node.output[0], numpy_helper.to_array(attrs["value"]))
                continue
            self.nodes.append((node.op_type, list(node.input), list(node.output), attrs))
        inits = {i.name for i in graph.initializer}
        self.input_name = next(i.name for i in graph.input if i.name not in inits)
        self.output_name = graph.output[0].name
        # Drop each intermediate after its last use, so a forward holds only what autograd saves.
        last_use: dict[str, int] = {}
        for j, (_, inputs, _, _) in enumerate(self.nodes):
            for n in inputs:
                last_use[n] = j
        self._free_after: list[list[str]] = [[] for _ in self.nodes]
        for n, j in last_use.items():
            if n != self.output_name and n not in self._slots:
                self._free_after[j].append(n)

    def _add_const(self, slot: str, name: str, array: np.ndarray) -> None:
        self.register_buffer(slot, torch.from_numpy(np.array(array)), persistent=True)
        self._slots[name] = slot

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        env: dict[str, torch.Tensor] = {self.input_name: x}
        for (op, inputs, outputs, attrs), free in zip(self.nodes, self._free_after):
            args = [env[n] if n in env else (getattr(self, self._slots[n]) if n else None) for n in inputs]
            while args and args[-1] is None:
                args.pop()
            env[outputs[0]] = OPS[op](*args, **attrs)
            for n in free:
                env.pop(n, None)
        return env[self.output_name]


def _is_mxnet_normalised(model) -> bool:
    """insightface's rule: mxnet-converted recognizers normalise inside the graph (Sub and Mul first)."""
    names = [n.name for n in model.graph.node[:8]]
    has_sub = any(n.startswith(("Sub", "_minus")) for n in names)
    has_mul = any(n.startswith(("Mul", "_mul")) for n in names)
    return has_sub and has_mul


def _dims(value_info) -> list[int | None]:
    return [d.dim_value if d.HasField("dim_value") else None for d in value_info.type.tensor_type.shape.dim]


def recognizer_problem(model) -> str | None:
    """Why an ONNX model is not an ArcFace recognizer (None when it looks like one).

    Mirrors insightface's model routing: a detector has five or more outputs; 192x192 inputs are
    landmark models, 96x96 attribute models, two 128x128 inputs the swapper; a recognizer has one
    square NCHW image input of at least 112 px (a multiple of 16) and one [N, D] output.
    """
    graph = model.graph
    inits = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in inits]
    if len(graph.output) >= 5:
        return f"it has {len(graph.output)} outputs (a face detector)"
    if len(inputs) != 1:
        return f"it has {len(inputs)} inputs (expected one image input)"
    shape = _dims(inputs[0])
    if len(shape) != 4 or shape[1] != 3:
        return f"its input has shape {shape} (expected [N, 3, 112, 112])"
    h, w = shape[2], shape[3]
    if h in (96, 192) or h != w or h is None or h < 112 or h % 16:
        return f"its input is {h}x{w} (a recognizer takes square crops of 112 px; 192 is a landmark model)"
    if len(graph.output) != 1 or len(_dims(graph.output[0])) != 2:
        return "it does not have one [N, D] embedding output"
    return None


class ArcFaceTorch(nn.Module):
    """ArcFace recognizer in torch: aligned RGB crops [N, 3, 112, 112] in [0, 1] -> embeddings [N, D].

    Embeddings are returned unnormalised, exactly as the ONNX model outputs them.
    """

    def __init__(self, model, source: str = "<onnx>"):
        super().__init__()
        problem = recognizer_problem(model)
        if problem:
            raise ValueError(
                f"recognizer {source}: not an ArcFace recognizer: {problem}. Expected an insightface "
                "recognition model such as w600k_r50.onnx, glintr100.onnx or w600k_mbf.onnx"
            )
        self.source = source
        self.net = OnnxGraphModule(model, source)
        inits = {i.name for i in model.graph.initializer}
        shape = _dims(next(i for i in model.graph.input if i.name not in inits))
        self.input_size = int(shape[2])
        mxnet = _is_mxnet_normalised(model)
        # Pixels in 0..255 -> (x - mean) / std, as insightface's ArcFaceONNX.get_feat does.
        self.input_mean = 0.0 if mxnet else 127.5
        self.input_std = 1.0 if mxnet else 127.5
        self.requires_grad_(False)
        self.eval()
        with torch.no_grad():
            out = self.net(torch.zeros(1, 3, self.input_size, self.input_size))
        if out.ndim != 2:
            raise ValueError(f"recognizer {source}: output has shape {list(out.shape)}, expected [N, D]")
        self.embedding_dim = int(out.shape[1])

    @property
    def dtype(self) -> torch.dtype:
        return next(b for b in self.buffers() if b.is_floating_point()).dtype

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        x = (crops.to(self.dtype) * 255.0 - self.input_mean) / self.input_std
        return self.net(x)
