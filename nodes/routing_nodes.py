"""Nodes: several identities in one video, each identity's adapter acting only on its own face after the gate."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from comfy_api.latest import io

from ..training.adapter.gate import GATE_MODES
from ..training.logs import pack_logger
from ..training.routing.faces import LEFT_TO_RIGHT, ORDERS
from ..training.routing.streams import TEXT
from .runtime.adapter_settings import check_adapter_family, resolve_gate_start
from .runtime.routing import RoutedGate, install, routed_layers
from .runtime.routing_regions import MISMATCH_CHOICES, AutomaticRegions, GivenRegions
from .types import (ADAPTER_CATEGORY, IdentityReward, Reference, RoutedIdentities, adapter_input, gate_start_input,
                    override_input)

log = pack_logger(__name__)
AUTOMATIC, GIVEN = "automatic (faces at the gate)", "given masks"
VAE_TEMPORAL = 4  # video frames per latent frame of the Wan and HunyuanVideo VAEs (for mask batches over frames)


@dataclass(frozen=True)
class RoutedIdentity:
    adapter: dict
    strength: float
    reference: object | None  # ReferenceIdentity
    mask: torch.Tensor | None  # ComfyUI MASK [N, H, W]
    name: str


class RoutedIdentityNode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PersonalVideoRoutedIdentity",
            display_name="Routed Identity",
            category=ADAPTER_CATEGORY,
            description="One person for Apply Identity Adapters (Routed): their adapter, and optionally their "
                        "reference (to find their face by likeness) or a mask (where their face is). Chain one node "
                        "per person; the chain's order is the people's order (left to right).",
            inputs=[
                adapter_input(),
                io.Float.Input("strength", default=1.0, min=-10.0, max=10.0, step=0.01,
                               tooltip="This person's adapter strength inside their region."),
                Reference.Input("reference", optional=True,
                                tooltip="This person's reference (Load Reference Faces), for regions assigned by "
                                        "'closest reference'."),
                io.Mask.Input("mask", optional=True,
                              tooltip="Where this person's face is (regions = given masks): one mask, one per latent "
                                      "frame, or one per video frame; resized to the latent as core's regional "
                                      "conditioning resizes masks."),
                RoutedIdentities.Input("identities", optional=True,
                                       tooltip="The people before this one (another Routed Identity)."),
            ],
            outputs=[RoutedIdentities.Output(display_name="identities",
                                             tooltip="The people so far, this one last.")],
        )

    @classmethod
    def execute(cls, adapter, strength, reference=None, mask=None, identities=None) -> io.NodeOutput:
        before = list(identities or [])
        name = f"identity {len(before) + 1} ({getattr(adapter, 'source', 'adapter')})"
        return io.NodeOutput(before + [RoutedIdentity(adapter, float(strength), reference, mask, name)])


class ApplyRoutedIdentityAdapters(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PersonalVideoApplyRoutedIdentityAdapters",
            display_name="Apply Identity Adapters (Routed)",
            category=ADAPTER_CATEGORY,
            description="Several people in one video: after the gate each person's adapter acts only on the tokens "
                        "of their own face region (found in the base model's prediction at the gate, or given as "
                        "masks); everywhere else, and before the gate, the base model runs unchanged.",
            inputs=[
                io.Model.Input("model", tooltip="The video model (Wan 2.1 / 2.2 text-to-video, HunyuanVideo)."),
                RoutedIdentities.Input("identities", tooltip="The people, from a chain of Routed Identity nodes."),
                io.Combo.Input("regions", options=[AUTOMATIC, GIVEN], default=AUTOMATIC,
                               tooltip="Automatic: at the gate the base model's predicted video is decoded (vae) and "
                                       "faces are found (identity_reward), followed over frames and given to the "
                                       "people. Given masks: each Routed Identity's mask."),
                io.Combo.Input("assign_by", options=list(ORDERS), default=LEFT_TO_RIGHT,
                               tooltip="Automatic regions: which face is whose. 'left to right': the chain's order; "
                                       "'closest reference': by likeness to each person's reference."),
                io.Float.Input("region_scale", default=1.8, min=1.0, max=4.0, step=0.1,
                               tooltip="Automatic regions: each face box grown by this factor about its centre (1.8 "
                                       "covers the head and hair)."),
                io.Combo.Input("face_count_mismatch", options=list(MISMATCH_CHOICES), default=MISMATCH_CHOICES[0],
                               tooltip="Automatic regions with more or fewer faces than people: route the faces found "
                                       "(a person without a face gets no adapter, extra faces keep the base model; "
                                       "a warning says which), or stop sampling with an error."),
                gate_start_input("use"),
                io.Combo.Input("gate_mode", options=list(GATE_MODES), default="steps", optional=True,
                               tooltip="As on Apply Identity Adapter (Gated)."),
                override_input("use"),
                io.Vae.Input("vae", optional=True, tooltip="Automatic regions: the model's VAE, to decode the "
                                                          "prediction at the gate."),
                IdentityReward.Input("identity_reward", optional=True,
                                     tooltip="Automatic regions: the face detector (and, for 'closest reference', "
                                             "the recognizer the references were built with)."),
            ],
            outputs=[io.Model.Output(tooltip="The model with the routed identity adapters."),
                     io.String.Output(display_name="report", tooltip="The people, layers and gate used.")],
        )

    @classmethod
    def execute(cls, model, identities, regions, assign_by, region_scale, face_count_mismatch, gate_start,
                gate_mode="steps", override_gate_start=False, vae=None, identity_reward=None) -> io.NodeOutput:
        if not identities:
            raise ValueError("identities: got none; connect a Routed Identity node (one per person)")
        for ident in identities:
            check_adapter_family(ident.adapter, model)
        starts = [resolve_gate_start(i.adapter, gate_start, override_gate_start) for i in identities]
        if len({s for s, _ in starts}) > 1:
            found = ", ".join(f"{i.name}: {s:g}" for i, (s, _) in zip(identities, starts))
            raise ValueError(f"identities: their adapters record different gate starts ({found}); turn "
                             "override_gate_start on to choose one for all")
        start, start_from = starts[0]
        layers = routed_layers(model, identities)
        names = [i.name for i in identities]
        automatic = regions == AUTOMATIC
        if automatic:
            source = automatic_regions(identities, names, assign_by, region_scale, face_count_mismatch, vae,
                                       identity_reward)
        else:
            missing = [i.name for i in identities if i.mask is None]
            if missing:
                raise ValueError(f"regions = given masks: {', '.join(missing)} has no mask; connect a MASK to each "
                                 f"Routed Identity, or use regions = {AUTOMATIC}")
            temporal = int(vae.temporal_compression_decode() or 1) if vae is not None else VAE_TEMPORAL
            source = GivenRegions([i.mask for i in identities], names, temporal)
        patch = tuple(int(p) for p in model.model.diffusion_model.patch_size)
        gate = RoutedGate(start, gate_mode, layers, source, patch)
        patched = model.clone()
        install(patched, gate, automatic)
        text_layers = sum(layer.stream == TEXT for layer in layers)
        report = (f"{len(identities)} identities ({', '.join(names)}); regions: {regions}"
                  + (f", assigned {assign_by}" if automatic else "")
                  + f"; {len(layers) - text_layers} token layers routed, {text_layers} text-token layers left "
                  f"without adapter; gate_start {start:g} ({start_from}), gate_mode {gate_mode}")
        log.info("PersonalVideo routed apply: %s", report)
        return io.NodeOutput(patched, report)


def automatic_regions(identities, names, assign_by, region_scale, face_count_mismatch, vae, identity_reward):
    missing = [n for n, v in (("vae", vae), ("identity_reward", identity_reward)) if v is None]
    if missing:
        raise ValueError(f"regions = {AUTOMATIC}: connect {' and '.join(missing)} (the model's VAE decodes the "
                         "prediction at the gate; the identity reward model finds the faces), or use given masks")
    if face_count_mismatch not in MISMATCH_CHOICES:
        raise ValueError(f"face_count_mismatch: got {face_count_mismatch!r}, expected one of {MISMATCH_CHOICES}")
    if assign_by not in ORDERS:
        raise ValueError(f"assign_by: got {assign_by!r}, expected one of {ORDERS}")
    references = [i.reference for i in identities]
    if assign_by != LEFT_TO_RIGHT:
        missing = [i.name for i in identities if i.reference is None]
        if missing:
            raise ValueError(f"assign_by = {assign_by}: {', '.join(missing)} has no reference; connect Load Reference "
                             f"Faces to each Routed Identity, or assign {LEFT_TO_RIGHT}")
        for ref in references:
            ref.check_recognizer(identity_reward)
    return AutomaticRegions(vae, identity_reward, references, names, assign_by, float(region_scale),
                            face_count_mismatch == MISMATCH_CHOICES[1])


NODES = [RoutedIdentityNode, ApplyRoutedIdentityAdapters]
