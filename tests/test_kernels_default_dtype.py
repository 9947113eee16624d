"""The compiled CPU kernels write float32 buffers whatever torch's default dtype is.

A float32 model run after ``torch.set_default_dtype(float64)`` or ``(bfloat16)`` once had its
kernels write float32 into buffers allocated in the default dtype: wrong values (float64) or a
corrupted heap (bfloat16, half the bytes). Each recipe's network, built and first run under the
float32 default, must give the same outputs and gradients under the others.
"""

from __future__ import annotations

import pytest
import torch

from spikeforge import functional as SF
from spikeforge import models


def _inputs(name: str, g: torch.Generator) -> torch.Tensor:
    if name == "nmnist-csnn":  # sparse event counts, as N-MNIST frames are
        frames = torch.rand(6, 3, 2, 34, 34, generator=g)
        return torch.where(frames < 0.05, torch.ones_like(frames), torch.zeros_like(frames))
    images = torch.rand(3, 1, 28, 28, generator=g)
    return torch.where(images < 0.7, torch.zeros_like(images), images)


def _run(name: str, net: torch.nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    SF.reset(net)
    kwargs = {"generator": torch.Generator().manual_seed(1)} if name == "fc-lif" else {}
    out = net(x, **kwargs)
    spikes = out[0] if isinstance(out, tuple) else out
    spikes.float().mul(torch.arange(spikes.numel()).view(spikes.shape) % 7).sum().backward()
    grads = [p.grad.clone() for p in net.parameters() if p.grad is not None]
    net.zero_grad(set_to_none=True)
    return [spikes.detach(), *grads]


@pytest.mark.parametrize("default", [torch.float64, torch.bfloat16], ids=str)
@pytest.mark.parametrize("name", ["fc-lif", "csnn", "nmnist-csnn", "rleaky"])
def test_recipe_networks_under_another_default_dtype(name, default):
    torch.manual_seed(0)
    kwargs = {"steps": 5} if name in ("fc-lif", "rleaky") else {}
    kwargs |= {"channels": 8, "steps": 3} if name == "csnn" else {}
    net = models.build(name, **kwargs)
    with torch.no_grad():  # fresh weights ×4: every output layer fires
        for param in net.parameters():
            param.mul_(4)
    x = _inputs(name, torch.Generator().manual_seed(2))
    expect = _run(name, net, x)
    assert expect[0].sum() > 0 and len(expect) > 1
    previous = torch.get_default_dtype()
    torch.set_default_dtype(default)
    try:
        got = _run(name, net, x)
    finally:
        torch.set_default_dtype(previous)
    assert torch.equal(got[0], expect[0])
    for a, b in zip(got[1:], expect[1:], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
