"""Random rotation of event frames, applied to the sparse cells before batching.

``rotation_sources(angles)`` asks ``torch.nn.functional.affine_grid`` + ``grid_sample`` (nearest,
zero padding, ``align_corners=False``) which input pixel each output pixel of a ``size x size``
frame takes when the frame is rotated by ``angle`` degrees counter-clockwise as displayed
(y axis down, centre of the frame fixed; torchvision's ``rotate`` convention). It does so by
sampling an image of pixel numbers, so the answer is exactly what ``grid_sample`` would do to the
frames themselves; output pixels whose source lies outside the sensor get -1 and stay empty.
``rotate_sparse`` then moves every non-zero cell of a :class:`SparseFrames` accordingly, in
``O(non-zeros)`` instead of a pass over the dense ``[T, 2, 34, 34]`` frames. Nothing can leave
the sensor: every output index is an output pixel of the same frame.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .framecache import SparseFrames


def rotation_theta(angles_deg: torch.Tensor) -> torch.Tensor:
    """``[B, 2, 3]`` affine matrices mapping output to input coordinates (normalised)."""
    a = angles_deg.to(torch.float64) * (math.pi / 180)
    cos, sin, zero = torch.cos(a), torch.sin(a), torch.zeros_like(a)
    return torch.stack([torch.stack([cos, -sin, zero], -1), torch.stack([sin, cos, zero], -1)], 1)


def rotate_frames(frames: torch.Tensor, angles_deg: torch.Tensor) -> torch.Tensor:
    """Rotate dense ``frames [B, C, H, W]`` (float) by one angle per sample, nearest, zero-fill."""
    theta = rotation_theta(angles_deg).to(frames.dtype)
    grid = torch.nn.functional.affine_grid(theta, list(frames.shape), align_corners=False)
    return torch.nn.functional.grid_sample(frames, grid, mode="nearest", padding_mode="zeros",
                                           align_corners=False)


def rotation_sources(angles_deg: torch.Tensor, size: int) -> np.ndarray:
    """``[B, size * size]`` source pixel (flat ``y * size + x``) of every output pixel, -1 when
    it comes from outside the frame."""
    ids = torch.arange(1, size * size + 1, dtype=torch.float64).reshape(1, 1, size, size)
    sampled = rotate_frames(ids.expand(len(angles_deg), 1, size, size), angles_deg)
    return sampled.reshape(len(angles_deg), size * size).round().long().numpy() - 1


def rotate_sparse(frames: SparseFrames, sources: np.ndarray) -> SparseFrames:
    """Move the cells of ``frames`` (pixels the last ``len(sources)`` of each flat index) to the
    output pixels whose source they are (see :func:`rotation_sources`)."""
    pixels = len(sources)
    outputs = np.flatnonzero(sources >= 0)
    by_source = np.argsort(sources[outputs], kind="stable")
    src_sorted, out_sorted = sources[outputs][by_source], outputs[by_source]
    plane, pixel = np.divmod(frames.index, pixels)
    first = np.searchsorted(src_sorted, pixel, side="left")
    fan = np.searchsorted(src_sorted, pixel, side="right") - first  # outputs per input cell
    cell = np.repeat(np.arange(len(pixel)), fan)
    k = np.arange(len(cell)) - np.repeat(np.cumsum(fan) - fan, fan)
    index = plane[cell] * pixels + out_sorted[first[cell] + k]
    order = np.argsort(index, kind="stable")
    return SparseFrames(frames.length, index[order], frames.count[cell][order])
