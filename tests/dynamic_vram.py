"""ComfyUI 0.33's DynamicVRAM (``ModelPatcherDynamic``) driven on the CPU, with the pieces a CPU lacks replaced.

On NVIDIA cards 0.33 makes every MODEL a ``ModelPatcherDynamic`` (unless ``--disable-dynamic-vram``): its ``load``
leaves the weights on the host, gives each large layer an allocation in a "VBAR" (comfy_aimdo: a virtual VRAM range
whose pages are faulted in on use and evicted under pressure), and ``comfy.ops.cast_bias_weight`` then streams each
layer's weight into it per forward (``cast_modules_with_vbar`` / ``resolve_cast_module_with_vbar``), reusing it while
it stays resident, applying the layer's weight functions and LoRA patches (``weight_lowvram_function``) on the way.
On a CPU load device ``ModelPatcherDynamic.__new__`` returns a plain ModelPatcher, so no test reaches that code.

``simulated_dynamic_vram`` runs ComfyUI's own ``ModelPatcherDynamic`` and ``cast_bias_weight`` code on the CPU with
these replacements (everything else is ComfyUI's code, unchanged):

- ``comfy_aimdo.model_vbar.ModelVBAR`` -> ``FakeVBAR``: each allocation is a CPU byte buffer; ``fault`` returns a
  signature (the allocation's generation: unchanged while resident, new after an eviction) or ``None`` when told to
  act out of VRAM (the layer then streams through a cast buffer, as on a full card); ``free_memory`` evicts, and
  evicted memory is overwritten (reused, as physical pages are); ``one_layer_of_vram`` evicts every other page at
  each fault (a model far larger than the card). Faults and unpins are counted, so a test sees pins left behind.
- ``comfy_aimdo.torch.aimdo_to_tensor`` -> a uint8 view of that buffer (real: a tensor over the VRAM pages).
- ``comfy_aimdo.host_buffer.HostBuffer`` -> an empty stand-in; pinned staging is off (``--disable-pinned-memory``,
  a real ComfyUI switch), so no page-locked host memory is needed.
- ``comfy.model_management.is_device_cpu`` -> False for the simulated load device (``cpu:0``, so ``__new__`` does not
  reroute and ``_vbar_get`` makes a VBAR) and for the compute device inside ``cast_bias_weight`` (its first branch is
  a fallback for layers moved to the CPU; here the CPU stands in for the GPU).
- host weights report device ``cpu:1`` (``HostParam``; core's own ``LazyCastingParam`` does the same): on a GPU
  machine they live on the CPU and the input on the GPU, and ``cast_bias_weight`` takes the VBAR path only when the
  two differ. Their data stays where it is.

What this leaves unverified (only a GPU run shows it): the real VBAR's paging and eviction timing, CUDA streams and
their synchronisation, pinned-memory transfers, aimdo's own out-of-memory behaviour, and QuantizedTensor weights
(mixed-precision / 0.33's fp8_scaled layers) on the VBAR path: a QuantizedTensor cannot report another device, so
those layers take the classic cast here.
"""

from __future__ import annotations

import contextlib
import ctypes
import sys

import torch

SIMULATED_DEVICE = torch.device("cpu", 0)  # the "GPU": not equal to torch.device("cpu") (what tensors report)
HOST_DEVICE = torch.device("cpu", 1)


class HostParam(torch.nn.Parameter):
    """A host weight that reports a device other than the compute device (its data is an ordinary CPU tensor)."""

    @property
    def device(self):
        return HOST_DEVICE


class FakeVBAR:
    """comfy_aimdo's ModelVBAR with CPU buffers: allocations, faults with signatures, unpins, eviction."""

    instances: list["FakeVBAR"] = []
    out_of_vram = False  # fault() returns None (no VRAM page): the layer streams through a cast buffer
    one_layer_of_vram = False  # every fault first evicts all other unpinned pages (a model far larger than the card)
    fault_error: BaseException | None = None  # raised by the next fault (e.g. torch.OutOfMemoryError)

    def __init__(self, size, device_index):
        self.max_size, self.device, self.offset = int(size), device_index, 0
        self.buffers: dict[int, torch.Tensor] = {}
        self.generation: dict[int, int] = {}
        self.pinned: dict[int, int] = {}
        self.faults = self.unpins = 0
        FakeVBAR.instances.append(self)

    def prioritize(self, malloc_async_clamp=None):
        pass

    def deprioritize(self):
        pass

    def alloc(self, num_bytes):
        self.offset = (self.offset + 511) & ~511
        alloc = (self, self.offset, int(num_bytes))
        self.offset += int(num_bytes)
        return alloc

    def fault(self, offset, size):
        if FakeVBAR.fault_error is not None:
            error, FakeVBAR.fault_error = FakeVBAR.fault_error, None
            raise error
        if FakeVBAR.out_of_vram:
            return None
        if FakeVBAR.one_layer_of_vram:
            FakeVBAR.evict_all(keep=(self, offset))
        self.faults += 1
        self.pinned[offset] = self.pinned.get(offset, 0) + 1
        if offset not in self.buffers:
            self.buffers[offset] = torch.empty(size, dtype=torch.uint8)
            self.generation[offset] = len(self.generation) + 1000 * self.faults
        return (ctypes.c_uint32 * 1)(self.generation[offset])

    def unpin(self, offset, size):
        self.unpins += 1
        self.pinned[offset] = self.pinned.get(offset, 0) - 1

    def loaded_size(self):
        return sum(b.numel() for b in self.buffers.values())

    def free_memory(self, size_bytes):
        freed = self.loaded_size()
        self.evict()
        return freed

    def evict(self, keep=None):
        """Every unpinned page (but ``keep``'s) leaves VRAM and its memory goes to other data (here: overwritten with
        0xFF bytes, NaN as floats), as physical pages are reused: a tensor still viewing it reads garbage. The next
        fault gets a new signature and the weight is streamed again."""
        for offset in [o for o in self.buffers if self.pinned.get(o, 0) <= 0 and (self, o) != keep]:
            self.buffers.pop(offset).fill_(255)
            self.generation.pop(offset)

    @staticmethod
    def evict_all(keep=None):
        for vbar in FakeVBAR.instances:
            vbar.evict(keep)

    def pins_left(self) -> int:
        return sum(max(n, 0) for n in self.pinned.values())


class FakeHostBuffer:
    def __init__(self, size=0, prewarm=0, max_grow_size=0, mark_cold=True):
        self.size = 0

    def truncate(self, size, do_unregister=True):
        self.size = int(size)


def _aimdo_to_tensor(alloc, device):
    vbar, offset, size = alloc
    return vbar.buffers[offset][:size]


@contextlib.contextmanager
def simulated_dynamic_vram(monkeypatch):
    """Inside: ``ModelPatcherDynamic(model, SIMULATED_DEVICE, cpu)`` works on the CPU (see the module docstring)."""
    import comfy.model_management as mm
    import comfy.ops
    import comfy_aimdo.host_buffer
    import comfy_aimdo.model_vbar
    import comfy_aimdo.torch
    from comfy.cli_args import args

    real_is_cpu = mm.is_device_cpu

    def is_device_cpu(device):
        caller = sys._getframe(1).f_code  # by name and file: a test may wrap comfy.ops.cast_bias_weight
        in_cast = caller.co_name == "cast_bias_weight" and caller.co_filename == comfy.ops.__file__
        if device == SIMULATED_DEVICE or in_cast:
            return False
        return real_is_cpu(device)

    FakeVBAR.instances, FakeVBAR.out_of_vram, FakeVBAR.fault_error = [], False, None
    FakeVBAR.one_layer_of_vram = False
    monkeypatch.setattr(comfy_aimdo.model_vbar, "ModelVBAR", FakeVBAR)
    monkeypatch.setattr(comfy_aimdo.torch, "aimdo_to_tensor", _aimdo_to_tensor)
    monkeypatch.setattr(comfy_aimdo.host_buffer, "HostBuffer", FakeHostBuffer)
    monkeypatch.setattr(mm, "is_device_cpu", is_device_cpu)
    monkeypatch.setattr(args, "disable_pinned_memory", True)
    yield


def dynamic_patcher(model_patcher):
    """A ``ModelPatcherDynamic`` over ``model_patcher``'s model (as 0.33 builds it on an NVIDIA card), whose streamed
    layers' host weights are ``HostParam``\\ s after every load (an ON_LOAD callback)."""
    import comfy.model_patcher
    import comfy.patcher_extension

    patcher = comfy.model_patcher.ModelPatcherDynamic(model_patcher.model, SIMULATED_DEVICE, torch.device("cpu"))
    assert type(patcher).__name__ == "ModelPatcherDynamic", type(patcher)
    patcher.add_callback_with_key(comfy.patcher_extension.CallbacksMP.ON_LOAD, "personalvideo_test_host_params",
                                  mark_host_weights)
    return patcher


def mark_host_weights(patcher, *args):
    for module in patcher.model.modules():
        if not hasattr(module, "_v"):
            continue
        for name in ("weight", "bias"):
            p = module._parameters.get(name)
            if p is not None and type(p) in (torch.nn.Parameter, torch.Tensor):  # not a QuantizedTensor
                module._parameters[name] = HostParam(p.data, requires_grad=False)


def streamed_layers(patcher) -> list:
    """The layers ``patcher``'s load gave a VBAR allocation (they stream through cast_bias_weight's VBAR path)."""
    return [m for m in patcher.model.modules() if hasattr(m, "_v")]
