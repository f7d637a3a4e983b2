"""Where each identity's adapter acts, decided at the gate: given masks, or the faces in the base model's prediction.

- ``GivenRegions``: one MASK (or a mask batch over frames) per identity, resized to the latent's (H, W) exactly as
  core's regional conditioning resizes conditioning masks (``comfy.samplers.resolve_areas_and_cond_masks_multidim``:
  ``comfy.utils.common_upscale(mask, W, H, "bilinear", "none")``), then one per latent frame and one weight per token
  (training/routing/regions.py).
- ``AutomaticRegions``: the base model's clean-video prediction x0 at the gate (the CFG-combined prediction of the
  last step before the gate; when the gate opens at a sampler run's first call, the positive prediction of that
  call without adapters), decoded by the VAE, faces found by SCRFD in every frame, tracked, given to identities,
  dilated to regions (training/routing/faces.py). The base trajectory up to the gate is the base model's exactly,
  so this is the layout the video will have: the premise of routing after the gate.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

import comfy.model_management as mm
import comfy.utils

from ...training.logs import pack_logger
from ...training.routing.faces import (CLOSEST_REFERENCE, FaceTrack, assign_identities, identity_regions,
                                      token_frame_groups, track_faces)
from ...training.routing.regions import latent_frame_masks, pool_to_tokens, region_token_masks, token_grid

log = pack_logger(__name__)
MISMATCH_CHOICES = ("route the faces found", "stop with an error")


class GivenRegions:
    def __init__(self, masks: list[torch.Tensor], names: list[str], temporal: int):
        self.masks, self.names, self.temporal = masks, names, temporal

    def token_masks(self, base_model, x: torch.Tensor, state, patch, base_prediction) -> torch.Tensor:
        """[identities, 1, T', H', W'] token weights (the same for every video of the batch)."""
        t, h, w = x.shape[2:]
        out = []
        for mask, name in zip(self.masks, self.names):
            mask = mask.float()
            if mask.ndim == 2:
                mask = mask[None]
            if tuple(mask.shape[1:]) != (h, w):  # core's resize of a conditioning mask to the latent
                mask = comfy.utils.common_upscale(mask.unsqueeze(1), w, h, "bilinear", "none").squeeze(1)
            per_frame = latent_frame_masks(mask, t, self.temporal, f"{name}: mask")
            out.append(pool_to_tokens(per_frame, patch))
        return torch.stack(out)[:, None]


class AutomaticRegions:
    def __init__(self, vae, identity_model, references: list, names: list[str], order: str, scale: float,
                 stop_on_mismatch: bool):
        self.vae, self.identity_model, self.references = vae, identity_model, references
        self.names, self.order, self.scale, self.stop_on_mismatch = names, order, scale, stop_on_mismatch
        self.reports: list[str] = []  # one per video and sampler run, newest last (also logged)

    def token_masks(self, base_model, x: torch.Tensor, state, patch, base_prediction) -> torch.Tensor:
        """[identities, videos, T', H', W'] token weights from the faces in the base model's prediction."""
        x0 = state.last_denoised if state.last_denoised is not None else base_prediction()
        latent = base_model.process_latent_out(x0)
        if state.patcher is not None:  # room for the VAE without unloading the model that is sampling
            mm.load_models_gpu([state.patcher, self.vae.patcher])
        masks = []
        for b in range(latent.shape[0]):
            images = self.vae.decode(latent[b:b + 1])
            frames = images.reshape(-1, *images.shape[-3:])[..., :3].float().cpu()
            masks.append(self.video_masks(frames, tuple(latent.shape[2:]), patch, f"video {b + 1}"))
        return torch.stack(masks, 1)

    def video_masks(self, frames: torch.Tensor, latent_thw: tuple[int, int, int], patch, label: str = "video"
                    ) -> torch.Tensor:
        """[identities, T', H', W'] for the decoded ``frames`` [F, H, W, 3] in [0, 1] of a latent [T, H, W]."""
        (t, h, w), (fh, fw) = latent_thw, frames.shape[1:3]
        grid = token_grid(latent_thw, patch)
        per_frame = [self.identity_model.detect(frame) for frame in frames]
        tracks, short = track_faces(per_frame)
        similarity = self._similarity(frames, tracks) if self.order == CLOSEST_REFERENCE else None
        assignment = assign_identities(tracks, len(self.names), self.order, similarity)
        temporal = self.vae.temporal_compression_decode() or 1
        groups = token_frame_groups(t, max(1, int(temporal)), patch[0], frames.shape[0])
        grid_px = (grid[1] * patch[1] * fh // h, grid[2] * patch[2] * fw // w)  # the padded token grid in pixels
        masks = region_token_masks(identity_regions(tracks, assignment, groups, (fh, fw), self.scale), grid, grid_px)
        report = self._report(label, tracks, short, assignment, similarity, masks)
        self.reports.append(report)
        problem = assignment.mismatch(self.names, tracks)
        if problem:
            message = (f"automatic regions, {label}: {problem}, in the base model's prediction at the gate. "
                       "Fixes: give each identity a mask (regions = given masks), change the seed or the prompt so "
                       "the video shows one face per identity, or lower gate_start (a later prediction is sharper "
                       "but leaves the adapters fewer steps)")
            if self.stop_on_mismatch:
                raise ValueError(message + f"; or set face_count_mismatch to '{MISMATCH_CHOICES[0]}'")
            log.warning("PersonalVideo routing: %s", message)
        log.info("PersonalVideo routing:\n%s", report)
        return masks

    def _similarity(self, frames: torch.Tensor, tracks: list[FaceTrack]) -> np.ndarray:
        """[tracks, identities]: cosine of each track's mean embedding (its 4 largest faces) to each reference."""
        refs = torch.stack([F.normalize(r.embedding.reshape(-1).float(), dim=0) for r in self.references])
        rows = []
        for track in tracks:
            chosen = sorted(track.faces, key=lambda f: -track.faces[f].area)[:4]
            emb = self.identity_model.embed_faces(frames[chosen], [track.faces[f] for f in chosen])
            rows.append(F.normalize(emb.mean(0), dim=0).cpu() @ refs.T)
        return torch.stack(rows).numpy() if rows else np.zeros((0, len(self.names)))

    def _report(self, label, tracks, short, assignment, similarity, masks) -> str:
        lines = [f"{label}: {len(tracks)} face(s) found ({self.order})"]
        for i, name in enumerate(self.names):
            track = assignment.track_of[i]
            if track is None:
                lines.append(f"  {name}: no face")
                continue
            sim = f", similarity to its reference {similarity[track, i]:.2f}" if similarity is not None else ""
            tokens = int(masks[i].sum())
            lines.append(f"  {name}: {tracks[track].describe()}{sim}; {tokens} of {masks[i].numel()} tokens")
        lines += [f"  not a face (seen in too few frames): {t.describe()}" for t in short]
        return "\n".join(lines)
