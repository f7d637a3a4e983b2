"""Nodes: apply an identity adapter gated to the end of sampling; save and load adapter files."""

from __future__ import annotations

import os

from comfy_api.latest import io

from ..training.adapter.files import (EXPERTS, IdentityAdapter, build_metadata, load_adapter, recorded_expert,
                                      save_adapter)
from ..training.adapter.gate import DEFAULT_GATE_START, GATE_MODES
from . import paths
from .runtime.adapter_settings import META_BASE_MODEL, check_adapter_family, resolve_gate_start
from .runtime.gate import apply_gated_adapter
from .runtime.model import model_family
from .types import ADAPTER_CATEGORY, adapter_input, gate_start_input, override_input
from ..training.logs import pack_logger

log = pack_logger(__name__)
FROM_ADAPTER = "from adapter"
EXPERT_CHOICES = (FROM_ADAPTER, "unknown", *[e for e in EXPERTS if e])


def expert_input(what: str) -> io.Input:
    return io.Combo.Input(
        "expert", options=list(EXPERT_CHOICES), default=FROM_ADAPTER, optional=True,
        tooltip=f"Which expert of a two-expert model (Wan 2.2 A14B) the adapter belongs to. '{FROM_ADAPTER}': "
                f"{what} what the adapter carries; the others override it.")


def resolve_expert(adapter, expert: str) -> tuple[str, str]:
    """(expert, where it came from); '' = unknown."""
    if expert == FROM_ADAPTER:
        return recorded_expert(adapter), "recorded in the adapter"
    if expert not in EXPERT_CHOICES:
        raise ValueError(f"expert: got {expert!r}, expected one of {EXPERT_CHOICES}")
    return ("" if expert == "unknown" else expert), "set on this node"


class ApplyIdentityAdapter(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PersonalVideoApplyIdentityAdapter",
            display_name="Apply Identity Adapter (Gated)",
            category=ADAPTER_CATEGORY,
            description="Adds the identity adapter to the model so that it acts only in the final steps of "
                        "sampling (by default the gate start the adapter was trained with, usually the last "
                        "quarter), also across split samplers: motion comes from the base model, the face from "
                        "the adapter. Style LoRAs loaded before or after stay always on.",
            inputs=[
                io.Model.Input("model", tooltip="The video model to sample with (Wan, HunyuanVideo, ...)."),
                adapter_input(),
                io.Float.Input("strength", default=1.0, min=-10.0, max=10.0, step=0.01,
                               tooltip="Adapter strength once the gate is open (0 = base model)."),
                gate_start_input("use"),
                io.Combo.Input("gate_mode", options=list(GATE_MODES), default="steps", optional=True,
                               tooltip="'steps': fraction of the steps of the whole sampling (the method's "
                                       "definition; also right when the sampling is split over several sampler "
                                       "nodes, e.g. the Wan 2.2 two-expert template). 'timestep': fraction of "
                                       "the model's timestep range, like core hook keyframes."),
                override_input("use"),
                expert_input("use"),
            ],
            outputs=[io.Model.Output(tooltip="The model with the gated identity adapter."),
                     io.String.Output(display_name="report",
                                      tooltip="The gate start and expert used, and where each came from.")],
        )

    @classmethod
    def execute(cls, model, adapter, strength, gate_start, gate_mode="steps", override_gate_start=False,
                expert=FROM_ADAPTER) -> io.NodeOutput:
        source = check_adapter_family(adapter, model)
        start, start_from = resolve_gate_start(adapter, gate_start, override_gate_start)
        expert_used, expert_from = resolve_expert(adapter, expert)
        patched, _, _ = apply_gated_adapter(model, adapter, strength, start, gate_mode, source=source)
        report = (f"identity adapter {source}: gate_start {start:g} ({start_from}), gate_mode {gate_mode}, "
                  f"strength {strength:g}, expert {expert_used or 'unknown'} ({expert_from})")
        log.info("PersonalVideo apply: %s", report)
        return io.NodeOutput(patched, report)


class SaveIdentityAdapter(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PersonalVideoSaveIdentityAdapter",
            display_name="Save Identity Adapter",
            category=ADAPTER_CATEGORY,
            description="Saves the adapter as an ordinary ComfyUI LoRA (.safetensors) in models/loras, with "
                        "its gate start and expert (by default the adapter's own), rank/alpha, base model "
                        "family and pack version in its header.",
            inputs=[
                adapter_input(),
                io.String.Input("filename_prefix", default="personalvideo/identity",
                                tooltip="Path under models/loras; a counter and .safetensors are appended."),
                gate_start_input("record"),
                io.Model.Input("model", optional=True,
                               tooltip="The model the adapter belongs to, to record its family so that "
                                       "loading it onto another family fails clearly."),
                override_input("record"),
                expert_input("record"),
            ],
            outputs=[io.String.Output(display_name="lora_name",
                                      tooltip="The saved file's name as LoRA loaders list it.")],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, adapter, filename_prefix, gate_start, model=None, override_gate_start=False,
                expert=FROM_ADAPTER) -> io.NodeOutput:
        meta = dict(getattr(adapter, "metadata", {}))
        family = model_family(model) if model is not None else meta.get(META_BASE_MODEL)
        start, start_from = resolve_gate_start(adapter, gate_start, override_gate_start)
        expert_used, expert_from = resolve_expert(adapter, expert)
        meta.update(build_metadata(adapter, start, family, expert=expert_used))
        root = paths.lora_save_dir()
        path = save_adapter(paths.next_free_path(root, filename_prefix), adapter, meta)
        name = os.path.relpath(path, root).replace(os.sep, "/")
        text = (f"saved {name} ({len(adapter)} tensors): gate_start {start:g} ({start_from}), expert "
                f"{expert_used or 'unknown'} ({expert_from})")
        log.info("PersonalVideo %s", text)
        return io.NodeOutput(name, ui={"text": [text]})


class LoadIdentityAdapter(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PersonalVideoLoadIdentityAdapter",
            display_name="Load Identity Adapter",
            category=ADAPTER_CATEGORY,
            description="Loads an identity adapter (or any ComfyUI LoRA file) from models/loras for the gated "
                        "apply node, and reports what the file says about itself.",
            inputs=[io.Combo.Input("lora_name", options=paths.lora_names(),
                                   tooltip="A .safetensors file in models/loras.")],
            outputs=[
                io.LoraModel.Output(display_name="adapter", tooltip="The adapter, for the apply node."),
                io.String.Output(display_name="info",
                                 tooltip="Rank, alpha, gate start, expert, base model family."),
            ],
        )

    @classmethod
    def execute(cls, lora_name) -> io.NodeOutput:
        adapter: IdentityAdapter = load_adapter(paths.lora_path(lora_name), display_name=lora_name)
        meta = {k.removeprefix("personalvideo."): v for k, v in adapter.metadata.items()
                if k.startswith("personalvideo.")}
        info = f"{lora_name}: {len(adapter)} tensors; " + (
            ", ".join(f"{k}={v}" for k, v in sorted(meta.items())) or "no PersonalVideo metadata")
        if not meta.get("gate_start"):
            info += f"; records no gate start: the apply node uses {DEFAULT_GATE_START:g}"
        return io.NodeOutput(adapter, info)


NODES = [ApplyIdentityAdapter, SaveIdentityAdapter, LoadIdentityAdapter]
