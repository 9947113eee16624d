"""Input checking shared by the figure functions: tensors or arrays in, numpy out."""

from __future__ import annotations

import numpy as np


def to_numpy(x, name: str, ndim: int | tuple[int, ...]) -> np.ndarray:
    """``x`` (torch tensor, numpy array or nested lists) as a float64 array of rank ``ndim``."""
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    arr = np.asarray(x, dtype=np.float64)
    ranks = (ndim,) if isinstance(ndim, int) else ndim
    if arr.ndim not in ranks:
        want = " or ".join(str(r) for r in ranks)
        raise ValueError(f"{name} must have rank {want}, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape})")
    return arr
