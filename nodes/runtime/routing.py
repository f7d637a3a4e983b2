"""Region-routed identity adapters on the model patcher: each identity's LoRA acts only on its region's tokens.

The gated apply node adds the LoRA in weight space (gate.py), which cannot tell one token from another. Here
every adapted layer gets, for the gated model calls only, a torch forward hook that adds each identity's LoRA in
activation space with a weight per token (training/routing/token_lora.py). Forward hooks are plain torch, so they
work on every ComfyUI version and every layer class (comfy.ops casts, fp8, lowvram offloading: the hook sees the
layer's input and output, not its weight). Like the gate's weight functions they are installed by an APPLY_MODEL
wrapper on a clone of the patcher, around one gated call, and removed after it: before the gate nothing is added;
the input MODEL and other clones never see them; ComfyUI's loading and offloading are untouched.

The gate decision is IdentityGate's (same rule, same split-sampler handling). Per sampler run (SAMPLER_SAMPLE), a
``RunState`` travels in the run's transformer_options; at the first gated call the regions are decided once for the
run (given masks resized to the latent, or faces found in the base model's prediction: routing_regions.py) and
every later gated call reuses them. Tokens: the image tokens are the latent's patches in (frame, row, column) order
(training/routing/regions.py); text tokens get no adapter (training/routing/streams.py). HunyuanVideo's single-stream
blocks hold text and image tokens in one sequence: ComfyUI 0.33 puts the text first and says where the image starts
(``transformer_options["img_slice"]``, read by a pre-hook on the block); 0.3.75 puts the image first.
"""

from __future__ import annotations

import functools

import torch

import comfy.patcher_extension
import comfy.utils

from ...training.logs import pack_logger
from ...training.routing.regions import token_grid
from ...training.routing.streams import IMAGE, JOINT, TEXT, classify_layers
from ...training.routing.token_lora import LowRankPair, add_routed_lora
from .gate import IdentityGate, call_options, lora_to_patches, low_rank
from .model import model_family

log = pack_logger(__name__)
COND = 0  # comfy.samplers: index of the positive conditioning in a call's cond_or_uncond


class RoutedLayer:
    """One adapted layer: its token stream and each identity's pair on it (identities without one are left out)."""

    def __init__(self, path: str, stream: str, pairs: dict[int, LowRankPair]):
        self.path, self.stream, self.pairs = path, stream, pairs


def routed_layers(model, identities: list) -> list[RoutedLayer]:
    """Every layer any identity (routing_nodes.RoutedIdentity) adapts, with each identity's low-rank pair and the
    layer's token stream."""
    pairs: dict[str, dict[int, LowRankPair]] = {}
    for i, ident in enumerate(identities):
        patches, unmatched = lora_to_patches(model, ident.adapter)
        if not patches:
            raise ValueError(f"{ident.name}: none of its {len(ident.adapter)} keys match a weight of this "
                             f"{model_family(model)} model; connect the model it was trained on")
        if unmatched:
            log.warning("%s: %d keys match no weight of this model and are not applied: %s", ident.name,
                        len(unmatched), ", ".join(unmatched[:8]))
        for key, adapter in patches.items():
            path = key.removeprefix("diffusion_model.").removesuffix(".weight")
            pair = low_rank(adapter)
            weight = getattr(comfy.utils.get_attr(model.model.diffusion_model, path), "weight", None)
            if pair is None or not key.endswith(".weight") or weight is None or weight.ndim != 2:
                raise ValueError(f"{ident.name}: layer {path} is not a plain LoRA pair on a linear weight (LoHa, "
                                 "LoKr, DoRA, full or bias deltas cannot be applied per token); use a plain LoRA")
            up, down, alpha = pair
            scale = ident.strength * (float(alpha) / down.shape[0] if alpha is not None else 1.0)
            pairs.setdefault(path, {})[i] = LowRankPair(up.float(), down.float().flatten(1), scale)
    streams = classify_layers(model_family(model), list(pairs))
    return [RoutedLayer(path, streams[path], p) for path, p in pairs.items()]


class RunState:
    """What one sampler run knows: its sampling patcher, the last base prediction before the gate, the regions."""

    def __init__(self, patcher=None):
        self.patcher = patcher
        self.last_denoised: torch.Tensor | None = None  # CFG-combined x0 of the latest call before the gate
        self.masks: torch.Tensor | None = None  # [identities, videos, T', H', W'] token weights
        self.latent_shape: tuple | None = None


class CallRouting:
    """The token weights of one gated call, per identity, for the call's batch (conditioning chunks x videos)."""

    def __init__(self, masks: torch.Tensor, batch: int):
        identities, videos = masks.shape[:2]
        if batch % videos:
            raise ValueError(f"routing: a model call of batch {batch} for {videos} videos; area conditioning or "
                             "other batch layouts are not supported with routed adapters")
        flat = masks.reshape(identities, videos, -1).repeat(1, batch // videos, 1)  # chunks follow each other
        self.image = [w if bool(w.any()) else None for w in flat]  # an identity with no region costs nothing
        self.tokens = flat.shape[-1]
        self.joint_offset = 0  # where the image tokens start in a joint (text + image) sequence
        self._joint: dict[tuple[int, int], list] = {}

    def weights(self, layer: RoutedLayer, tokens: int) -> list[torch.Tensor | None]:
        if layer.stream == IMAGE:
            if tokens != self.tokens:
                raise ValueError(f"routing: layer {layer.path} got {tokens} tokens, expected the latent's "
                                 f"{self.tokens} image tokens; this model adds tokens routing does not know "
                                 "(reference or control latents): use plain text-to-video conditioning")
            return [self.image[i] for i in layer.pairs]
        start = self.joint_offset
        if start + self.tokens > tokens:
            raise ValueError(f"routing: layer {layer.path} got {tokens} tokens, fewer than the {self.tokens} image "
                             f"tokens from position {start}")
        if (tokens, start) not in self._joint:  # text tokens: weight 0 (exactly no adapter)
            padded = []
            for w in self.image:
                if w is not None:
                    w = torch.nn.functional.pad(w, (start, tokens - start - self.tokens))
                padded.append(w)
            self._joint[(tokens, start)] = padded
        return [self._joint[(tokens, start)][i] for i in layer.pairs]


class RoutedGate(IdentityGate):
    """IdentityGate's decision; when open, each identity's LoRA on its own tokens (``regions`` decides them)."""

    def __init__(self, gate_start: float, mode: str, layers: list[RoutedLayer], regions, patch: tuple[int, int, int]):
        super().__init__(gate_start, mode, {})
        self.layers = [layer for layer in layers if layer.stream != TEXT and layer.pairs]
        self.regions = regions  # GivenRegions or AutomaticRegions: .token_masks(...)
        self.patch = patch
        self.state_key = self.run_key + ":routing"

    def sampler_sample_wrapper(self, executor, *args, **kwargs):
        guider, _, extra_args = (list(args) + [None] * 3)[:3]
        if isinstance(extra_args, dict):
            options = extra_args.setdefault("model_options", {}).setdefault("transformer_options", {})
            options[self.state_key] = RunState(getattr(guider, "model_patcher", None))
        return super().sampler_sample_wrapper(executor, *args, **kwargs)

    def remember_prediction(self, args: dict) -> torch.Tensor:
        """sampler_post_cfg_function: keeps the newest CFG-combined x0 until the regions are decided."""
        state = args.get("model_options", {}).get("transformer_options", {}).get(self.state_key)
        if state is not None and state.masks is None:
            state.last_denoised = args["denoised"]
        return args["denoised"]

    def apply_model_wrapper(self, executor, x, t, *args, **kwargs):
        options = call_options(args, kwargs)
        base_model = executor.class_obj
        if not self.is_open(base_model, t, options):
            return executor(x, t, *args, **kwargs)
        state = options.get(self.state_key)
        if state is None:  # a call outside a sampler run (no SAMPLER_SAMPLE): decide for this call alone
            state = RunState()
        if state.masks is None:
            state.masks = self.regions.token_masks(base_model, x, state, self.patch,
                                                   lambda: self._base_prediction(executor, x, t, args, kwargs))
            state.latent_shape = tuple(x.shape[2:])
        elif tuple(x.shape[2:]) != state.latent_shape:
            raise ValueError(f"routing: a gated call on a latent of {list(x.shape[2:])}, but the regions were made "
                             f"for {list(state.latent_shape)}; area conditioning is not supported with routed adapters")
        call = CallRouting(state.masks.to(x.device), x.shape[0])
        if call.tokens != int(torch.tensor(token_grid(x.shape, self.patch)).prod()):
            raise ValueError("routing: the regions do not match this latent's token grid")
        handles = []
        try:
            diffusion_model = base_model.diffusion_model
            for layer in self.layers:
                module = comfy.utils.get_attr(diffusion_model, layer.path)
                handles.append(module.register_forward_hook(functools.partial(_route, layer, call)))
            for path in dict.fromkeys(layer.path.rpartition(".")[0] for layer in self.layers if layer.stream == JOINT):
                block = comfy.utils.get_attr(diffusion_model, path)  # where this block's image tokens start
                handles.append(block.register_forward_pre_hook(functools.partial(_joint_start, call), with_kwargs=True))
            return executor(x, t, *args, **kwargs)
        finally:
            for handle in handles:
                handle.remove()

    def _base_prediction(self, executor, x, t, args, kwargs) -> torch.Tensor:
        """The base model's x0 for the positive conditioning of this call (when no earlier call of the run left
        one: a gate open from the run's first step). One extra model call, once per sampler run."""
        out = executor(x, t, *args, **kwargs)
        order = call_options(args, kwargs).get("cond_or_uncond") or [COND]
        chunk = order.index(COND) if COND in order else 0
        return out.chunk(len(order))[chunk]

    def release_after_sampling(self, executor, *args, **kwargs):
        try:
            return executor(*args, **kwargs)
        finally:
            for layer in self.layers:
                for pair in layer.pairs.values():
                    pair.release()


def _route(layer: RoutedLayer, call: CallRouting, module, inputs, output):
    x = inputs[0]
    return add_routed_lora(output, x, list(layer.pairs.values()), call.weights(layer, x.shape[1]))


def _joint_start(call: CallRouting, module, args, kwargs):
    options = kwargs.get("transformer_options") or {}
    image_slice = options.get("img_slice")  # ComfyUI 0.33: [text tokens, all tokens]; absent: image first
    call.joint_offset = int(image_slice[0]) if image_slice else 0


def install(patched, gate: RoutedGate, automatic: bool) -> None:
    """Attach the gate's wrappers (and, for automatic regions, the post-CFG hook that keeps the base prediction)."""
    key, wrappers = gate.run_key, comfy.patcher_extension.WrappersMP
    patched.add_wrapper_with_key(wrappers.APPLY_MODEL, key, gate.apply_model_wrapper)
    patched.add_wrapper_with_key(wrappers.SAMPLER_SAMPLE, key, gate.sampler_sample_wrapper)
    patched.add_wrapper_with_key(wrappers.OUTER_SAMPLE, key, gate.release_after_sampling)
    if automatic:
        patched.set_model_sampler_post_cfg_function(gate.remember_prediction)
