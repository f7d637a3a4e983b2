"""Evaluation of generated videos, as the papers compute the metrics. Plain torch, no ComfyUI imports; it reuses
the reward models' own embedding and feature functions."""
