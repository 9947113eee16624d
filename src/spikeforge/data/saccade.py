"""Turn MNIST images into N-MNIST-style event recordings, the way N-MNIST was recorded.

N-MNIST (Orchard et al. 2015) filmed each digit on a monitor with an ATIS event camera moved by a
pan-tilt unit through three saccades of ~105 ms along a triangle, the digit sliding by
(+3.5, +7), then (+3.5, -7), then (-7, 0) pixels (the motion that
``tonic.datasets.nmnist.stabilize`` undoes). This module simulates that recording:

1. *Optics*: the digit (white on black) is blurred by a Gaussian point spread function
   (``blur_px``) and sampled bilinearly at each sensor pixel of the 34 x 34 array as it moves:
   digit pixel (c, r) sits at sensor position ``(c + ox(t), r + oy(t))`` with
   ``(ox, oy) = origin + jitter + path(t)``, ``path`` piecewise linear through the saccade
   vertices, time sampled every ``step_us``.
2. *Pixels*: each pixel sees log intensity ``L = log(b + (1 - b) * I)``, with ``I`` in [0, 1]
   and ``b`` the monitor's black level. A pixel remembers a reference level ``R``; when
   ``L - R >= C_on`` it emits an ON event and ``R += C_on``, when ``R - L >= C_off`` an OFF event
   and ``R -= C_off`` (the DVS/ATIS change detector). Thresholds vary per pixel
   (``threshold_sigma``, fixed-pattern mismatch). ``L`` is linear between samples, so crossing
   times are interpolated to the microsecond. An event within ``refractory_us`` of the pixel's
   previous event is lost (the reference still moves on).
3. *Noise*: each event's timestamp gets Gaussian latency jitter (``latency_jitter_us``), and
   background activity adds ``noise_hz`` random events per pixel per second (random polarity).

Every sample draws its randomness from ``numpy.random.default_rng([*seed, index])``, so a
sample's recording depends only on its image, ``seed`` and ``index``, not on how many are
simulated together. Output: events sorted by time, fields x, y, t (us), p (1 = ON).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

from .binfmt import make_events

CHUNK = 16


@dataclass(frozen=True)
class SaccadeConfig:
    """Parameters of the simulated recording (see module doc)."""

    sensor: int = 34
    saccade_us: int = 105_000
    path_px: tuple[tuple[float, float], ...] = ((0.0, 0.0), (3.5, 7.0), (7.0, 0.0), (0.0, 0.0))
    origin_px: tuple[float, float] = (-1.0, 1.0)
    jitter_px: float = 0.5
    blur_px: float = 0.7
    black_level: float = 0.1
    threshold: float = 0.45
    threshold_sigma: float = 0.04
    refractory_us: float = 1000.0
    latency_jitter_us: float = 40.0
    noise_hz: float = 0.5
    step_us: int = 500

    @property
    def duration_us(self) -> int:
        return self.saccade_us * (len(self.path_px) - 1)

    def to_dict(self) -> dict:
        return asdict(self)


def _gaussian_blur(images: np.ndarray, sigma: float, pad: int) -> np.ndarray:
    """``images [B, H, W]`` padded by ``pad`` zeros on each side, blurred by a Gaussian."""
    out = np.pad(images, ((0, 0), (pad, pad), (pad, pad)))
    if sigma <= 0:
        return out
    radius = max(1, int(np.ceil(3 * sigma)))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    for axis in (1, 2):
        padded = np.pad(out, [(radius, radius) if a == axis else (0, 0) for a in range(3)])
        size = out.shape[axis]
        out = sum(w * padded.take(np.arange(k, k + size), axis=axis) for k, w in enumerate(taps))
    return out


def _log_intensity(images: np.ndarray, offsets: np.ndarray, cfg: SaccadeConfig) -> np.ndarray:
    """``L [S, B * sensor * sensor]`` (float32) for ``images [B, H, W]`` (float in [0, 1]) at
    ``offsets [B, S, 2]`` (digit origin on the sensor, pixels); pixels flattened as (b, y, x)."""
    pad = 4 + int(np.ceil(3 * cfg.blur_px))
    blurred = torch.from_numpy(_gaussian_blur(images, cfg.blur_px, pad)).float()
    b, h, w = blurred.shape
    steps, sensor = offsets.shape[1], cfg.sensor
    pix = torch.arange(sensor, dtype=torch.float64)
    off = torch.from_numpy(offsets)
    # normalised grid_sample coordinates of the digit point seen by sensor pixel (x, y):
    # column u = x - ox + pad, row v = y - oy + pad
    gx = (2 * (pix[None, None, None, :] - off[:, :, 0, None, None] + pad) / (w - 1) - 1).float()
    gy = (2 * (pix[None, None, :, None] - off[:, :, 1, None, None] + pad) / (h - 1) - 1).float()
    grid = torch.stack(torch.broadcast_tensors(gx, gy), dim=-1).reshape(b, steps * sensor,
                                                                         sensor, 2)
    sampled = torch.nn.functional.grid_sample(blurred[:, None], grid, mode="bilinear",
                                              padding_mode="zeros", align_corners=True)
    log_i = sampled.reshape(b, steps, sensor * sensor).clamp_(0, 1)
    log_i = log_i.mul_(1 - cfg.black_level).add_(cfg.black_level).log_()
    return log_i.transpose(0, 1).reshape(steps, b * sensor * sensor).numpy()


def _change_events(log_i: np.ndarray, c_on: np.ndarray, c_off: np.ndarray,
                   cfg: SaccadeConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Events ``(pixel, t, p)`` of the change detector over ``log_i [S, P]`` (P flat pixels).

    Dense work per step is a few comparisons; only pixels that cross a threshold are followed
    (a pixel may cross several times within one step).
    """
    ref = log_i[0].copy()
    neg_c_off = -c_off
    last = np.full(ref.shape, -np.inf)
    found_pixel, found_t, found_p = [], [], []
    for k in range(len(log_i) - 1):
        l0, l1 = log_i[k], log_i[k + 1]
        change = l1 - ref
        idx = np.flatnonzero((change >= c_on) | (change <= neg_c_off))
        while idx.size:
            on = l1[idx] - ref[idx] >= c_on[idx]
            level = np.where(on, ref[idx] + c_on[idx], ref[idx] - c_off[idx])
            a, b = l0[idx].astype(np.float64), l1[idx].astype(np.float64)
            t = (k + (level - a) / (b - a)) * cfg.step_us
            emit = t - last[idx] >= cfg.refractory_us
            found_pixel.append(idx[emit])
            found_t.append(t[emit])
            found_p.append(on[emit])
            last[idx[emit]] = t[emit]
            ref[idx] = level
            change = l1[idx] - level
            idx = idx[(change >= c_on[idx]) | (change <= neg_c_off[idx])]
    if not found_t:
        return np.zeros(0, dtype=np.int64), np.zeros(0), np.zeros(0, dtype=bool)
    return np.concatenate(found_pixel), np.concatenate(found_t), np.concatenate(found_p)


def simulate_saccades(
    images: np.ndarray | torch.Tensor,
    indices: Sequence[int],
    seed: int | Sequence[int] = 0,
    config: SaccadeConfig | None = None,
) -> list[np.ndarray]:
    """Event recordings of ``images`` (uint8 ``[B, 28, 28]``), one structured array each.

    Sample ``j`` draws from ``numpy.random.default_rng([*seed, indices[j]])``. Work goes in
    chunks of :data:`CHUNK` images (about 150 MB of float32 intensities each).
    """
    cfg = config or SaccadeConfig()
    images = np.asarray(images, dtype=np.float64) / 255.0
    if images.ndim != 3:
        raise ValueError(f"images must be [B, H, W], got shape {images.shape}")
    indices = [int(i) for i in indices]
    if len(indices) != len(images):
        raise ValueError("one index per image is needed")
    seeds = [seed] if isinstance(seed, int) else list(seed)
    rngs = [np.random.default_rng([*seeds, i]) for i in indices]
    recordings = []
    for start in range(0, len(images), CHUNK):
        recordings += _simulate(images[start:start + CHUNK], rngs[start:start + CHUNK], cfg)
    return recordings


def _simulate(images: np.ndarray, rngs: list[np.random.Generator], cfg: SaccadeConfig
              ) -> list[np.ndarray]:
    n, sensor = len(images), cfg.sensor
    steps = cfg.duration_us // cfg.step_us + 1
    times = np.arange(steps) * cfg.step_us
    vertex_t = np.arange(len(cfg.path_px)) * cfg.saccade_us
    path = np.stack([np.interp(times, vertex_t, [p[a] for p in cfg.path_px]) for a in (0, 1)],
                    axis=-1)
    jitter = np.stack([r.uniform(-cfg.jitter_px, cfg.jitter_px, 2) for r in rngs])
    offsets = np.asarray(cfg.origin_px)[None, None] + jitter[:, None] + path[None]
    c_on = np.stack([np.maximum(0.05, cfg.threshold + cfg.threshold_sigma * r.standard_normal(
        (sensor, sensor))) for r in rngs])
    c_off = np.stack([np.maximum(0.05, cfg.threshold + cfg.threshold_sigma * r.standard_normal(
        (sensor, sensor))) for r in rngs])
    log_i = _log_intensity(images, offsets, cfg)
    pixel, ti, pi = _change_events(log_i, c_on.reshape(-1).astype(np.float32),
                                   c_off.reshape(-1).astype(np.float32), cfg)
    bi, rest = np.divmod(pixel, sensor * sensor)
    yi, xi = np.divmod(rest, sensor)
    order = np.argsort(bi, kind="stable")
    bounds = np.searchsorted(bi[order], np.arange(n + 1))
    duration_s = cfg.duration_us * 1e-6
    recordings = []
    for j, rng in enumerate(rngs):
        sel = order[bounds[j]:bounds[j + 1]]
        t = ti[sel] + cfg.latency_jitter_us * rng.standard_normal(len(sel))
        n_noise = rng.poisson(cfg.noise_hz * sensor * sensor * duration_s)
        x = np.concatenate([xi[sel], rng.integers(0, sensor, n_noise)])
        y = np.concatenate([yi[sel], rng.integers(0, sensor, n_noise)])
        t = np.concatenate([t, rng.uniform(0, cfg.duration_us, n_noise)])
        p = np.concatenate([pi[sel].astype(np.int64), rng.integers(0, 2, n_noise)])
        t = np.clip(np.rint(t), 0, cfg.duration_us).astype(np.int64)
        keep = np.argsort(t, kind="stable")
        recordings.append(make_events(x[keep], y[keep], t[keep], p[keep]))
    return recordings
