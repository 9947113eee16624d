"""The sparse first block (Conv2d → MaxPool2d(2) from the nonzero inputs) equals the dense one."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from spikeforge import functional as SF
from spikeforge import models
from spikeforge.kernels import get_backend, sparse

cpu = get_backend("auto", "cpu")
pytestmark = pytest.mark.skipif(not hasattr(cpu, "sparse_conv_pool"),
                                reason="the compiled CPU kernels are not available here")


def _frames(shape, density, seed, counts=False):
    g = torch.Generator().manual_seed(seed)
    on = torch.rand(shape, generator=g) < density
    values = torch.randint(1, 4, shape, generator=g).float() if counts else torch.ones(shape)
    return on * values


@pytest.mark.parametrize("shape, out_ch, k, pad", [
    ((6, 2, 34, 34), 12, 5, 0),      # the N-MNIST first layer
    ((3, 3, 11, 13), 5, 3, 1),       # odd output sizes: the last row/column is not pooled
    ((2, 1, 9, 9), 20, 3, 0),        # more than 16 output channels
])
@pytest.mark.parametrize("counts", [False, True])
def test_conv_pool_equals_dense(shape, out_ch, k, pad, counts):
    x = _frames(shape, 0.05, seed=sum(shape), counts=counts)
    conv = nn.Conv2d(shape[1], out_ch, k, padding=pad)
    got = cpu.sparse_conv_pool(x, conv.weight, conv.bias, pad)
    want = F.max_pool2d(conv(x), 2)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    g = torch.randn(want.shape)
    grads = torch.autograd.grad(got, [conv.weight, conv.bias], g)
    ref = torch.autograd.grad(want, [conv.weight, conv.bias], g)
    for a, b in zip(grads, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5 * b.abs().max().item())


def test_all_zero_input_gives_pooled_bias_and_zero_weight_grad():
    conv = nn.Conv2d(2, 4, 3)
    out = cpu.sparse_conv_pool(torch.zeros(2, 2, 8, 8), conv.weight, conv.bias, 0)
    assert torch.equal(out, conv.bias.detach().view(1, 4, 1, 1).expand(2, 4, 3, 3))
    (gw,) = torch.autograd.grad(out.sum(), [conv.weight])
    assert torch.equal(gw, torch.zeros_like(gw))


def test_nmnist_model_sparse_path_equals_dense_layers():
    torch.manual_seed(0)
    net = models.build("nmnist-csnn")
    frames = _frames((12, 3, 2, 34, 34), 0.02, seed=1)
    assert sparse.conv_pool(frames, net.net[0].module, net.net[1].module) is not None
    spikes, mem = net(frames)
    (spikes.sum() + mem.pow(2).sum()).backward()
    fast = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    SF.reset(net)
    spikes_d, mem_d = net.net(frames)
    (spikes_d.sum() + mem_d.pow(2).sum()).backward()
    assert torch.equal(spikes, spikes_d)
    torch.testing.assert_close(mem, mem_d, rtol=1e-5, atol=1e-5)
    for a, p in zip(fast, net.parameters(), strict=True):
        torch.testing.assert_close(a, p.grad, rtol=1e-4, atol=1e-5 * p.grad.abs().max().item())


def test_dense_or_unsupported_input_falls_back():
    conv, pool = nn.Conv2d(2, 4, 3), nn.MaxPool2d(2)
    dense = torch.rand(2, 1, 2, 10, 10)
    assert sparse.conv_pool(dense, conv, pool) is None
    x = _frames((2, 1, 2, 10, 10), 0.02, seed=2)
    assert sparse.conv_pool(x.double(), conv.double(), pool) is None
    assert sparse.conv_pool(x, nn.Conv2d(2, 4, 3, stride=2), pool) is None
    assert sparse.conv_pool(x, conv, nn.MaxPool2d(3)) is None
    assert sparse.conv_pool(x.requires_grad_(), conv, pool) is None
