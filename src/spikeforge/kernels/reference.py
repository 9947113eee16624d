"""Reference time loops of the neurons, in plain autograd: the oracle every fused backend matches.

IF / LIF (SpikingJelly convention), per step t from V[t−1]; V_r = V_reset, or 0 when soft:

    IF:                    H = V + X
    LIF, decay_input:      H = V + (X − (V − V_r)) / τ
    LIF, no decay_input:   H = V − (V − V_r) / τ + X
    S = Θ(H − V_th)                      (fires on H − V_th ≥ 0)
    hard: V = H·(1 − S) + V_reset·S      soft: V = H − V_th·S

Leaky (snnTorch convention), from U[t−1], reset from the previous membrane, detached:

    R = Θ(U[t−1] − thr)                  (fires on > 0, no gradient)
    subtract: U[t] = β·U[t−1] + X[t] − R·thr
    zero:     U[t] = β·(1 − R)·U[t−1] + X[t]
    S[t] = Θ(U[t] − thr)
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..surrogate import Surrogate, heaviside

#: The backend's name in :data:`spikeforge.kernels.BACKENDS`.
NAME = "reference"


def if_lif_charge(
    x: Tensor, v: Tensor, tau: float | None, decay_input: bool, v_reset: float | None
) -> Tensor:
    """H[t] from V[t−1] and X[t]; ``tau=None`` is the IF neuron."""
    if tau is None:
        return v + x
    v_r = 0.0 if v_reset is None else v_reset
    if decay_input:
        return v + (x - (v - v_r)) / tau
    return v - (v - v_r) / tau + x


def if_lif_step(
    x: Tensor,
    v: Tensor,
    tau: float | None,
    decay_input: bool,
    v_threshold: float,
    v_reset: float | None,
    surrogate: Surrogate,
    detach_reset: bool,
) -> tuple[Tensor, Tensor]:
    """One step: returns (S[t], V[t]) from X[t] and V[t−1]."""
    h = if_lif_charge(x, v, tau, decay_input, v_reset)
    s = surrogate(h - v_threshold)
    s_r = s.detach() if detach_reset else s
    if v_reset is None:
        v = h - v_threshold * s_r
    else:
        v = h * (1.0 - s_r) + v_reset * s_r
    return s, v


def if_lif(
    x_seq: Tensor,
    v: Tensor,
    tau: float | None,
    decay_input: bool,
    v_threshold: float,
    v_reset: float | None,
    surrogate: Surrogate,
    detach_reset: bool,
) -> tuple[Tensor, Tensor]:
    """Multi-step IF/LIF over ``x_seq`` [T, ...] from ``v`` [...]: returns (S, V) each [T, ...]."""
    spikes, volts = [], []
    for t in range(x_seq.shape[0]):
        s, v = if_lif_step(x_seq[t], v, tau, decay_input, v_threshold, v_reset, surrogate,
                           detach_reset)
        spikes.append(s)
        volts.append(v)
    return torch.stack(spikes), torch.stack(volts)


def leaky_step(
    x: Tensor, u: Tensor, beta: Tensor, threshold: float, reset_zero: bool, surrogate: Surrogate
) -> tuple[Tensor, Tensor]:
    """One step: returns (S[t], U[t]) from X[t] and U[t−1]; ``beta`` already clamped to [0, 1]."""
    r = heaviside(u.detach() - threshold, strict=True)
    if reset_zero:
        u = beta * (1.0 - r) * u + x
    else:
        u = beta * u + x - r * threshold
    return surrogate(u - threshold, strict=True), u


def leaky(
    x_seq: Tensor, u: Tensor, beta: Tensor, threshold: float, reset_zero: bool,
    surrogate: Surrogate,
) -> tuple[Tensor, Tensor]:
    """Multi-step Leaky over ``x_seq`` [T, ...] from ``u`` [...]: returns (S, U) each [T, ...]."""
    spikes, mems = [], []
    for t in range(x_seq.shape[0]):
        s, u = leaky_step(x_seq[t], u, beta, threshold, reset_zero, surrogate)
        spikes.append(s)
        mems.append(u)
    return torch.stack(spikes), torch.stack(mems)


def rleaky_step(
    x: Tensor, feedback: Tensor, u: Tensor, beta: Tensor, threshold: float, reset_zero: bool,
    surrogate: Surrogate,
) -> tuple[Tensor, Tensor]:
    """One RLeaky step (snnTorch convention), ``feedback`` = V(S[t−1]) already computed:

    subtract: U[t] = β·U[t−1] + X[t] + V(S[t−1]) − R·thr
    zero:     U[t] = (1 − R)·(β·U[t−1] + X[t] + V(S[t−1]))
    """
    r = heaviside(u.detach() - threshold, strict=True)
    base = beta * u + x + feedback
    u = base - r * base if reset_zero else base - r * threshold
    return surrogate(u - threshold, strict=True), u
