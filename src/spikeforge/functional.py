"""State handling, losses and read-outs for spike outputs ``[T, B, C]``.

Losses (targets are class indices ``[B]``):
    mse_rate:      mean over B, C of (mean_t S − onehot)²                       (SpikingJelly)
    mse_count:     MSE(Σ_t S, T_on/T_off counts) / T, T_on = int(T·correct_rate)  (snnTorch)
    mse_membrane:  mean over t, B, C of (U[t] − target)², target on/off          (snnTorch)
    ce_rate:       mean over t of cross-entropy(S[t])                            (snnTorch)
    ce_count:      cross-entropy(Σ_t S)                                          (snnTorch)
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


def _neurons(model: nn.Module):
    from .neuron import SpikingNeuron

    return (m for m in model.modules() if isinstance(m, SpikingNeuron))


def reset(model: nn.Module) -> None:
    """Clear the state of every spiking neuron in ``model`` (call after each batch)."""
    for m in _neurons(model):
        m.reset_state()


def detach(model: nn.Module) -> None:
    """Detach every neuron's state from the graph (truncated BPTT)."""
    for m in _neurons(model):
        m.detach_state()


def set_backend(model: nn.Module, backend: str) -> None:
    """Run every neuron of ``model`` (and the layers fused with it) on kernel ``backend``:
    ``"auto"``, ``"reference"``, ``"cpu"`` or ``"triton"`` (:mod:`spikeforge.kernels`).
    Raises ValueError for another name and :class:`~spikeforge.kernels.BackendUnavailable` for
    a backend that cannot run here, as a neuron built with it does."""
    from . import kernels

    kernels.get_backend(backend)
    for m in _neurons(model):
        m.backend = backend


def set_record(model: nn.Module, record: bool = True) -> None:
    """Switch membrane/spike recording of every neuron on or off."""
    for m in _neurons(model):
        m.record = record


def firing_rate(spikes: Tensor) -> Tensor:
    """Mean over time: ``[T, B, ...]`` → ``[B, ...]``."""
    return spikes.mean(0)


def _onehot(targets: Tensor, spikes: Tensor) -> Tensor:
    return F.one_hot(targets, spikes.shape[-1]).to(spikes.dtype)


def _check_output(out: Tensor, targets: Tensor) -> None:
    if out.dim() != 3:
        raise ValueError(f"output must be [T, B, C], got shape {tuple(out.shape)}")
    if targets.shape != out.shape[1:2]:
        raise ValueError(f"targets must be [B]={out.shape[1]}, got {tuple(targets.shape)}")


def mse_rate(spikes: Tensor, targets: Tensor) -> Tensor:
    """MSE between the mean firing rate ``[B, C]`` and the one-hot target."""
    _check_output(spikes, targets)
    rate = spikes.mean(0)
    return F.mse_loss(rate, _onehot(targets, rate))


def mse_count(spikes: Tensor, targets: Tensor, correct_rate: float = 0.8,
              incorrect_rate: float = 0.2) -> Tensor:
    """MSE between spike counts and int(T·rate) targets, divided by T."""
    _check_output(spikes, targets)
    steps = spikes.shape[0]
    onehot = _onehot(targets, spikes)
    target = onehot * int(steps * correct_rate) + (1 - onehot) * int(steps * incorrect_rate)
    return F.mse_loss(spikes.sum(0), target) / steps


def mse_membrane(membrane: Tensor, targets: Tensor, on_target: float = 1.0,
                 off_target: float = 0.0) -> Tensor:
    """Mean over steps of MSE(U[t], target), target = on_target for the class, else off_target."""
    _check_output(membrane, targets)
    onehot = _onehot(targets, membrane)
    target = onehot * on_target + (1 - onehot) * off_target
    return F.mse_loss(membrane, target.expand_as(membrane))


def ce_rate(spikes: Tensor, targets: Tensor) -> Tensor:
    """Cross-entropy of each step's output (as logits), averaged over steps."""
    _check_output(spikes, targets)
    steps, batch, classes = spikes.shape
    return F.cross_entropy(spikes.reshape(steps * batch, classes), targets.repeat(steps))


def ce_count(spikes: Tensor, targets: Tensor) -> Tensor:
    """Cross-entropy of the spike counts (as logits)."""
    _check_output(spikes, targets)
    return F.cross_entropy(spikes.sum(0), targets)


def predict(spikes: Tensor) -> Tensor:
    """Class with the most spikes: ``[T, B, C]`` → ``[B]`` (ties go to the lowest index)."""
    return spikes.sum(0).argmax(-1)


def accuracy(spikes: Tensor, targets: Tensor) -> float:
    """Fraction of samples whose most-spiking output neuron is the target."""
    return (predict(spikes) == targets).float().mean().item()


LOSSES = {
    "mse_rate": mse_rate,
    "mse_count": mse_count,
    "mse_membrane": mse_membrane,
    "ce_rate": ce_rate,
    "ce_count": ce_count,
}

