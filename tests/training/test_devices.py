"""training/devices.py: reward models stored on an offload device and moved to their load device only while used.

No accelerator here: the meta device stands in for one (a module moved there keeps its shapes, not its values).
Moving back from meta has no values to copy, so the test module records every move and, for that direction only,
allocates its CPU tensors empty (``to_empty``): what is checked is where the module is and when it moves.
"""

from __future__ import annotations

import pytest
import torch
from personalvideo.training.devices import DeviceHolder, to_reward_device

CPU, META = torch.device("cpu"), torch.device("meta")


class RecordedModule(torch.nn.Linear):
    """A small layer that records each ``.to(device)``."""

    def __init__(self):
        super().__init__(4, 4)
        self.moves: list[torch.device] = []

    def to(self, *args, **kwargs):
        device = torch.device(kwargs.get("device", args[0] if args else None))
        self.moves.append(device)
        if self.weight.is_meta and device.type != "meta":
            return self.to_empty(device=device)  # meta holds no values to copy back
        return super().to(*args, **kwargs)


def test_the_module_visits_its_load_device_once_per_outer_use_and_returns():
    module = RecordedModule()
    holder = DeviceHolder(module, load_device="meta", offload_device="cpu")
    assert module.moves == [CPU] and not module.training and not module.weight.requires_grad
    assert holder.device == CPU and holder.size_bytes() == (16 + 4) * 4
    with holder.on_device() as inner:
        assert inner is module and module.weight.is_meta and holder.device == META
        with holder.on_device(), holder.on_device("meta"):  # nested uses on the same device do not move it again
            assert module.weight.is_meta and module.moves == [CPU, META]
        assert module.weight.is_meta, "an inner use must not move it back while the outer one holds it"
    assert module.weight.device == CPU and holder.device == CPU and module.moves == [CPU, META, CPU]
    assert holder.load_device == META


def test_a_nested_use_on_another_device_is_refused_naming_both():
    module = RecordedModule()
    holder = DeviceHolder(module, load_device="meta", offload_device="cpu")
    with holder.on_device():
        with pytest.raises(ValueError, match=r"reward model: already in use on meta, asked for cpu; expected the "
                                             r"same device \(or none\) inside an outer use"):
            with holder.on_device("cpu"):
                pass
        assert module.weight.is_meta and holder.device == META  # the refusal moved nothing
    assert module.moves == [CPU, META, CPU] and holder.device == CPU


def test_frames_move_to_the_reward_device_with_their_gradient_path():
    frames = torch.rand(2, 8, 8, 3, dtype=torch.float16, requires_grad=True)
    moved = to_reward_device(frames, "meta")
    assert moved.device == META and moved.dtype == torch.float32 and moved.grad_fn is not None
    same = torch.rand(2, 8, 8, 3)
    assert to_reward_device(same, "cpu") is same  # already there in float32: no copy
