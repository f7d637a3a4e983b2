"""Training the proving-ground model from scratch: ComfyUI's own Wan 2.1 classes (WanVAE, WanModel) at tiny size.

1. The VAE learns to reconstruct face frames and clips (L1 + MSE), with a weak pull of its latents toward the
   statistics ComfyUI's Wan 2.1 latent format assumes (weight 0.01: measured, it leaves ``process_in`` latents at
   std ~0.2, which latent_norm.py then corrects exactly), decoded from slightly noised latents.
2. Training clips are encoded once; the diffusion model learns flow matching on them exactly as ComfyUI samples
   Wan (model input ``sigma * noise + (1 - sigma) * latent``, timestep ``1000 * sigma``, target
   ``noise - latent``), conditioned on the text stand-in's encoding of the motion prompt (empty prompt for
   classifier-free guidance); sigmas drawn logit-normal and shifted by the recipe's shift, the same shift the
   sampling graphs set with ModelSamplingSD3. Optionally image-first (one latent frame) before the clips. An EMA
   of the weights is what gets saved.

Plain torch on the CPU; every random draw comes from generators seeded by the recipe. Needs ComfyUI importable.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from dev.proving_ground.clips import MOTIONS, prompt_for, random_clip
from dev.proving_ground.faces import FaceCrop
from dev.proving_ground.recipe import Recipe

TEXT_WIDTH, TEXT_TOKENS = 4096, 16  # the stand-in's conditioning for Wan (tests/graphs.py uses the same)
Progress = Callable[[str, int, float], None]  # (phase, step, loss)


def text_conditioning(prompt: str) -> torch.Tensor:
    """[1, tokens, 4096]: exactly what PersonalVideoDevTextEncodeStandIn gives ComfyUI for this prompt."""
    from dev.standin_nodes import TextEncodeStandIn

    return TextEncodeStandIn().encode(prompt, TEXT_WIDTH, 0, TEXT_TOKENS)[0][0][0]


def _init_(module: torch.nn.Module, gen: torch.Generator) -> None:
    """ComfyUI's ops skip weight init (weights come from files): give every weight a seeded standard init."""
    for name, p in module.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        with torch.no_grad():
            if leaf == "gamma" or (leaf == "weight" and p.ndim == 1):
                p.fill_(1.0)
            elif leaf == "bias":
                p.zero_()
            elif leaf == "modulation":
                p.copy_(torch.randn(p.shape, generator=gen) / p.shape[-1] ** 0.5)
            else:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=gen) * math.sqrt(1.0 / fan_in))


def build_vae(recipe: Recipe, gen: torch.Generator):
    from comfy.ldm.wan.vae import WanVAE

    vae = WanVAE(dim=recipe.vae_dim, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                 temperal_downsample=[False, True, True], dropout=0.0)
    _init_(vae, gen)
    return vae


def build_dit(recipe: Recipe, gen: torch.Generator):
    import comfy.ops
    from comfy.ldm.wan.model import WanModel

    dit = WanModel(model_type="t2v", dim=recipe.dit_dim, ffn_dim=3 * recipe.dit_dim, num_heads=recipe.dit_dim // 128,
                   num_layers=recipe.dit_layers, in_dim=16, out_dim=16, text_dim=TEXT_WIDTH,
                   operations=comfy.ops.manual_cast)
    _init_(dit, gen)
    with torch.no_grad():
        dit.head.head.weight.zero_()  # starts predicting 0 (DiT's zero-init of the output layer)
    return dit


def _lr(step: int, total: int, peak: float, warmup: int = 20) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(total - warmup, 1)))


def _latent_format():
    from comfy.latent_formats import Wan21

    return Wan21()


def _to_video(clips: list[torch.Tensor]) -> torch.Tensor:
    """[F, H, W, 3] in [0, 1] -> [B, 3, F, H, W] in [-1, 1] (the VAE's input)."""
    return torch.stack(clips).permute(0, 4, 1, 2, 3) * 2 - 1


def _crop(x: torch.Tensor, size: int, gen: torch.Generator) -> torch.Tensor:
    """One random ``size`` x ``size`` window (a multiple of 8 from the origin) of every frame."""
    h, w = x.shape[-2:]
    top, left = (int(torch.randint((n - size) // 8 + 1, (1,), generator=gen)) * 8 for n in (h, w))
    return x[..., top:top + size, left:left + size]


def _edge_l1(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """L1 between the images' vertical and horizontal pixel differences (penalises blur that plain L1 tolerates)."""
    return sum(F.l1_loss(y.diff(dim=d), x.diff(dim=d)) for d in (-2, -1))


def train_vae(recipe: Recipe, faces: list[FaceCrop], progress: Progress | None = None, edge_weight: float = 0.0,
              inspect: Callable[[int, torch.nn.Module], None] | None = None):
    """``edge_weight``: weight of an edge (gradient) L1 term; 0, the recipe's loss, is what the build uses.
    ``inspect(step, vae)`` runs after every step (dev/proving_ground/vae_check.py measures checkpoints with it)."""
    gen = torch.Generator().manual_seed(recipe.seed)
    vae = build_vae(recipe, gen)
    fmt = _latent_format()
    opt = torch.optim.AdamW(vae.parameters(), lr=recipe.vae_lr, weight_decay=0.0)
    for step in range(recipe.vae_steps):
        frames, count = (1, recipe.vae_batch) if step % 2 == 0 else (5, max(recipe.vae_batch // 4, 1))
        clips = [random_clip(faces, gen, recipe.res, frames, strength=recipe.motion_strength)[0] for _ in range(count)]
        x = _crop(_to_video(clips), recipe.vae_crop, gen)
        z = fmt.process_in(vae.encode(x))
        noisy = z + 0.1 * torch.randn(z.shape, generator=gen)
        y = vae.decode(fmt.process_out(noisy))
        mean, std = z.mean(dim=(0, 2, 3, 4)), z.std(dim=(0, 2, 3, 4))
        moments = mean.pow(2).mean() + (std - 1).pow(2).mean()
        loss = F.l1_loss(y, x) + F.mse_loss(y, x) + 0.01 * moments
        if edge_weight:
            loss = loss + edge_weight * _edge_l1(y, x)
        for group in opt.param_groups:
            group["lr"] = _lr(step, recipe.vae_steps, recipe.vae_lr)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        if progress:
            progress("vae", step, float(loss.detach()))
        if inspect:
            inspect(step, vae)
    return vae.eval()


def identities(faces: list[FaceCrop], count: int) -> list[FaceCrop]:
    """The ``count`` largest faces (in photo pixels; ties by order), all when ``count`` is 0: the people the
    diffusion model learns to draw (a handful it can memorise; the VAE still trains on every face)."""
    if count <= 0 or count >= len(faces):
        return faces
    ranked = sorted(range(len(faces)), key=lambda i: (-faces[i].size, i))[:count]
    return [faces[i] for i in sorted(ranked)]


@torch.no_grad()
def encode_clips(recipe: Recipe, vae, faces: list[FaceCrop], progress: Progress | None = None):
    """(latents [N, 16, T, h, w] as the diffusion model sees them, motion index [N]); motions cycle evenly."""
    gen = torch.Generator().manual_seed(recipe.seed + 1)
    fmt = _latent_format()
    faces = identities(faces, recipe.identities)
    latents, motions = [], []
    for start in range(0, recipe.clips, 8):
        batch = [MOTIONS[i % len(MOTIONS)] for i in range(start, min(start + 8, recipe.clips))]
        clips = [random_clip(faces, gen, recipe.res, recipe.frames, motion=m, strength=recipe.motion_strength,
                             translate=recipe.dit_translate, augment=recipe.dit_augment)[0]
                 for m in batch]
        latents.append(fmt.process_in(vae.encode(_to_video(clips))))
        motions += [MOTIONS.index(m) for m in batch]
        if progress:
            progress("encode", start // 8, 0.0)
    return torch.cat(latents), torch.tensor(motions)


def train_dit(recipe: Recipe, latents: torch.Tensor, motions: torch.Tensor, progress: Progress | None = None,
              resume: dict | None = None, checkpoint: Callable[[dict], None] | None = None, every: int = 500,
              init: dict | None = None):
    """The diffusion model (its EMA weights; the raw ones when ``recipe.dit_ema`` is 0). ``checkpoint(state)`` is
    called every ``every`` steps and at the end with the whole training state; ``resume`` (such a state)
    continues from it, drawing the same batches as an uninterrupted run. ``init`` (the prefix recipe's saved weights)
    makes it a continuation: only the ``dit_more_steps`` clip steps of its last round run, from those weights."""
    import comfy.model_management as mm

    # ComfyUI 0.33 computes Wan's rotary embedding with a fused kernel that has no backward unless
    # ``in_training`` is set (0.3.75 has no such switch); the trainer node sets it the same way.
    was_training = getattr(mm, "in_training", False)
    mm.in_training = True
    try:
        return _train_dit(recipe, latents, motions, progress, resume, checkpoint, every, init)
    finally:
        mm.in_training = was_training


def training_sigmas(recipe: Recipe, n: int, gen: torch.Generator) -> torch.Tensor:
    """Sigmas for ``n`` training samples: t from ``recipe.timesteps``, then shifted exactly as ComfyUI's flow
    sampling (``ModelSamplingSD3``) shifts its schedule: sigma = shift t / (1 + (shift - 1) t)."""
    if recipe.timesteps == "logit_normal":
        t = torch.sigmoid(torch.randn(n, generator=gen))
    elif recipe.timesteps == "uniform":
        t = torch.rand(n, generator=gen)
    else:
        raise ValueError(f"timesteps: got {recipe.timesteps!r}, expected 'logit_normal' or 'uniform'")
    return (recipe.shift * t / (1 + (recipe.shift - 1) * t)).clamp(1e-3, 1.0)


def flow_loss(recipe: Recipe, pred: torch.Tensor, target: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """The model stays a velocity (flow) model; ``recipe.loss`` says what its error is measured as: "velocity"
    (MSE of v) or "x0" (MSE of the clean latent it implies, x0 = x_t - sigma v: sigma^2 times the velocity
    error, so the low-noise steps no longer outweigh the high-noise ones, where the layout is learnt)."""
    if recipe.loss == "velocity":
        return F.mse_loss(pred, target)
    if recipe.loss == "x0":
        return (sigma * (pred - target)).pow(2).mean()
    raise ValueError(f"loss: got {recipe.loss!r}, expected 'velocity' or 'x0'")


def _phase(step: int, recipe: Recipe) -> tuple[int, int, int, float]:
    """(frames of latent used, step within its phase, steps in the phase, its peak rate): image-first steps,
    then clips, then the continuation's clips."""
    if step < recipe.dit_image_steps:
        return 1, step, recipe.dit_image_steps, recipe.dit_lr
    step -= recipe.dit_image_steps
    if step < recipe.dit_steps:
        return 0, step, recipe.dit_steps, recipe.dit_lr
    return 0, step - recipe.dit_steps, recipe.dit_more_steps, recipe.dit_more_lr


def _train_dit(recipe: Recipe, latents: torch.Tensor, motions: torch.Tensor, progress: Progress | None,
               resume: dict | None, checkpoint: Callable[[dict], None] | None, every: int, init: dict | None):
    gen = torch.Generator().manual_seed(recipe.seed + 2)
    dit = build_dit(recipe, gen)
    ema = copy.deepcopy(dit).requires_grad_(False)
    conds = torch.cat([text_conditioning(prompt_for(m)) for m in MOTIONS] + [text_conditioning("")])
    opt = torch.optim.AdamW(dit.parameters(), lr=recipe.dit_lr, weight_decay=0.01)
    first = 0
    if init is not None:
        dit.load_state_dict(init)
        ema.load_state_dict(init)
        gen.manual_seed(recipe.seed + 2 + recipe.dit_more_rounds)  # each round draws its own batches
        first = recipe.dit_image_steps + recipe.dit_steps
    if resume is not None:
        dit.load_state_dict(resume["dit"])
        ema.load_state_dict(resume["ema"])
        opt.load_state_dict(resume["opt"])
        gen.set_state(resume["gen"])
        first = resume["step"]
    total = recipe.dit_image_steps + recipe.dit_steps + recipe.dit_more_steps
    for step in range(first, total):
        frames, phase_step, phase_total, peak = _phase(step, recipe)
        idx = torch.randint(len(latents), (recipe.dit_batch,), generator=gen)
        x0 = latents[idx][:, :, :frames] if frames else latents[idx]
        which = motions[idx].clone()
        which[torch.rand(recipe.dit_batch, generator=gen) < recipe.cfg_dropout] = len(MOTIONS)  # empty prompt
        sigma = training_sigmas(recipe, recipe.dit_batch, gen)
        noise = torch.randn(x0.shape, generator=gen)
        s = sigma.view(-1, 1, 1, 1, 1)
        pred = dit(s * noise + (1 - s) * x0, sigma * 1000, conds[which])
        loss = flow_loss(recipe, pred, noise - x0, s)
        for group in opt.param_groups:
            group["lr"] = _lr(phase_step, phase_total, peak)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(dit.parameters(), 1.0)
        opt.step()
        decay = min(recipe.dit_ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for e, p in zip(ema.parameters(), dit.parameters()):
                e.lerp_(p, 1 - decay) if decay > 0 else e.copy_(p)
        if progress:
            progress("dit", step, float(loss.detach()))
        if checkpoint and ((step + 1) % every == 0 or step + 1 == total):
            checkpoint({"step": step + 1, "dit": dit.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(),
                        "gen": gen.get_state()})
    return ema.eval()
