"""The exact best one-to-one assignment between rows and columns of a score matrix (the Hungarian problem).

``scipy.optimize.linear_sum_assignment`` solves it. scipy is a dependency of ComfyUI itself (core's samplers import
it), so it is present wherever the pack runs; the pack lists it in requirements.txt too.
"""

from __future__ import annotations

import numpy as np
import torch


def best_assignment(scores: torch.Tensor | np.ndarray, minimum: float | None = None) -> list[tuple[int, int]]:
    """Pairs (row, column) maximising the summed score, each row and column used at most once (min(rows, cols)
    pairs). Pairs scoring below ``minimum`` are left out afterwards (e.g. boxes that do not overlap at all)."""
    from scipy.optimize import linear_sum_assignment

    matrix = scores.detach().cpu().double().numpy() if isinstance(scores, torch.Tensor) else np.asarray(
        scores, dtype=np.float64)
    if matrix.ndim != 2:
        raise ValueError(f"scores: got shape {list(matrix.shape)}, expected a 2-D matrix (rows x columns)")
    if matrix.size == 0:
        return []
    if not np.isfinite(matrix).all():
        raise ValueError("scores: got NaN or infinite entries; every pair needs a finite score")
    rows, cols = linear_sum_assignment(matrix, maximize=True)
    pairs = [(int(r), int(c)) for r, c in zip(rows, cols)]
    if minimum is not None:
        pairs = [(r, c) for r, c in pairs if matrix[r, c] >= minimum]
    return sorted(pairs)
