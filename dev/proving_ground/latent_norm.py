"""Unit-variance latents for the diffusion model, with the VAE still an ordinary WanVAE file.

ComfyUI gives a Wan 2.1 diffusion model ``process_in(z) = (z - latents_mean) / latents_std`` of what the VAE
encodes (``comfy.latent_formats.Wan21``, the real VAE's statistics). A VAE trained here does not match those
statistics (measured: std about 0.2 per channel after ``process_in``), so at high noise the diffusion model sees
almost no signal. Instead of a scale factor somewhere else (ComfyUI would not know it), a per-channel affine map is
folded into the VAE's own weights: the encoder's output convolution (``conv1``, the mu rows) and the decoder's
input convolution (``conv2``, 1x1x1) absorb it, so ``process_in`` of the folded VAE's latents has mean 0 and
std 1 per channel on the training clips, and ``decode(encode(x))`` is unchanged up to float rounding. Then the
decoder is fine-tuned on latents with noise of a size that means the same thing at that scale.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from dev.proving_ground.recipe import Recipe


def _format():
    from comfy.latent_formats import Wan21

    return Wan21()


def channel_stats(latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (mean, std) of latents [N, C, T, H, W] (as the diffusion model sees them)."""
    flat = latents.transpose(0, 1).reshape(latents.shape[1], -1).double()
    return flat.mean(dim=1).float(), flat.std(dim=1).float()


def first_loss(latents: torch.Tensor) -> float:
    """The flow-matching loss of a model predicting 0 (Wan's zero-initialised head): E[(noise - x0)^2] =
    1 + E[x0^2], averaged over the latents' elements."""
    return 1.0 + float(latents.double().pow(2).mean())


@torch.no_grad()
def fold(vae, mean: torch.Tensor, std: torch.Tensor):
    """Fold ``z -> (z - mean) / std`` (in ``process_in`` space, per channel) into ``vae`` in place: its encoder then
    yields ``process_in`` latents normalised by (mean, std), and its decoder undoes it first. Returns ``vae``."""
    fmt = _format()
    m, s = fmt.latents_mean.flatten().to(mean), fmt.latents_std.flatten().to(mean)
    a, b = mean.double(), std.double()
    m, s = m.double(), s.double()
    z = vae.z_dim
    # encoder: z_vae' = m + (z_vae - m - s a) / b, z_vae = W x + c (the first z rows of conv1)
    w1, c1 = vae.conv1.weight, vae.conv1.bias
    w1[:z] = (w1[:z].double() / b.view(-1, 1, 1, 1, 1)).to(w1.dtype)
    c1[:z] = ((c1[:z].double() - m - s * a) / b + m).to(c1.dtype)
    # decoder: conv2(z_vae) with z_vae = m + b (z_vae' - m) + s a
    w2, c2 = vae.conv2.weight, vae.conv2.bias
    shift = m * (1 - b) + s * a
    c2.copy_((c2.double() + w2.double().flatten(1) @ shift).to(c2.dtype))
    w2.copy_((w2.double() * b.view(1, -1, 1, 1, 1)).to(w2.dtype))
    return vae


def normalise(latents: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """What the folded encoder gives for these (unfolded) ``process_in`` latents."""
    return (latents - mean.view(1, -1, 1, 1, 1)) / std.view(1, -1, 1, 1, 1)


def finetune_decoder(recipe: Recipe, vae, faces, progress: Callable[[str, int, float], None] | None = None):
    """Train the folded VAE's decoder side (``conv2`` + decoder; the encoder stays frozen, so the latents the
    diffusion model learnt stay valid) on latents with ``recipe.vae_latent_noise`` Gaussian noise in
    ``process_in`` space (unit variance now): the VAE's own loop trained it with 0.1 at std ~0.2, half the
    signal. Same data, crops and loss as ``train.train_vae``."""
    from dev.proving_ground.clips import random_clip
    from dev.proving_ground.train import _crop, _to_video

    def batch(step: int, gen: torch.Generator) -> torch.Tensor:
        frames, count = (1, recipe.vae_batch) if step % 2 == 0 else (5, max(recipe.vae_batch // 4, 1))
        clips = [random_clip(faces, gen, recipe.res, frames, strength=recipe.motion_strength)[0] for _ in range(count)]
        return _crop(_to_video(clips), recipe.vae_crop, gen)

    return train_decoder(vae, batch, recipe.vae_finetune_steps, recipe.vae_finetune_lr, recipe.vae_latent_noise,
                         torch.Generator().manual_seed(recipe.seed + 3), progress, "vae_finetune")


def train_decoder(vae, batch: Callable[[int, torch.Generator], torch.Tensor], steps: int, lr: float, noise: float,
                  gen: torch.Generator, progress: Callable[[str, int, float], None] | None = None,
                  phase: str = "vae_finetune", inspect: Callable[[int, torch.nn.Module], None] | None = None):
    """``steps`` AdamW steps (cosine rate to ``lr``) on the decoder side of ``vae`` only, decoding the frozen
    encoder's latents of ``batch(step, gen)`` (a video [B, 3, F, H, W] in [-1, 1]) with ``noise`` added in
    ``process_in`` space; L1 + MSE to the input. ``inspect(step, vae)`` runs after every step."""
    from dev.proving_ground.train import _lr

    fmt = _format()
    params = list(vae.conv2.parameters()) + list(vae.decoder.parameters())
    vae.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    for step in range(steps):
        x = batch(step, gen)
        with torch.no_grad():
            z = fmt.process_in(vae.encode(x))
        noisy = z + noise * torch.randn(z.shape, generator=gen)
        y = vae.decode(fmt.process_out(noisy))
        loss = F.l1_loss(y, x) + F.mse_loss(y, x)
        for group in opt.param_groups:
            group["lr"] = _lr(step, steps, lr)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if progress:
            progress(phase, step, float(loss.detach()))
        if inspect:
            inspect(step, vae)
    vae.requires_grad_(False)
    return vae.eval()
