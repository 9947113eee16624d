"""Sparse Conv2d → MaxPool2d(2) (kernels/sparse.py) equals torch's dense layers, forward and
every gradient, including the routing of tied maxima; the fused hidden net equals the layers with
the reference Leaky loop; NmnistCSNN on either equals its dense layers, and falls back to them."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from spikeforge import functional as SF
from spikeforge import models
from spikeforge.kernels import sparse
from spikeforge.neuron import Leaky
from spikeforge.surrogate import ATan

pytestmark = pytest.mark.skipif(sparse.library() is None,
                                reason="the sparse kernels cannot be compiled here")


def _events(shape, density, seed, counts=False):
    g = torch.Generator().manual_seed(seed)
    on = torch.rand(shape, generator=g) < density
    values = torch.randint(1, 4, shape, generator=g).float() if counts else torch.ones(shape)
    return on * values


def _dense(x_nchw, conv):
    """[T, B, C, H, W] → channels-last [T, B, H', W', O] through torch's own layers."""
    t, b = x_nchw.shape[:2]
    y = F.max_pool2d(conv(x_nchw.flatten(0, 1)), 2)
    return y.reshape(t, b, *y.shape[1:]).permute(0, 1, 3, 4, 2)


def _compare(x_nchw, conv, channels_last, exact=False, max_density=sparse.MAX_DENSITY):
    """Forward and (input, weight, bias) gradients of the sparse path against the dense one."""
    xd = x_nchw.clone().requires_grad_()
    want = _dense(xd, conv)
    xs = (x_nchw.permute(0, 1, 3, 4, 2) if channels_last else x_nchw).contiguous()
    xs.requires_grad_()
    got = sparse.conv_pool(xs, conv, nn.MaxPool2d(2), channels_last, max_density)
    assert got is not None and got.shape == want.shape
    if exact:
        assert torch.equal(got, want)
    else:
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    g = torch.randn(want.shape, generator=torch.Generator().manual_seed(7))
    params = [conv.weight, conv.bias]
    ref = torch.autograd.grad(want, [xd, *params], g)
    out = torch.autograd.grad(got, [xs, *params], g)
    gx = out[0].permute(0, 1, 4, 2, 3) if channels_last else out[0]
    for a, b in zip([gx, *out[1:]], ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * b.abs().max().item())


@pytest.mark.parametrize("shape, out_ch, k, pad", [
    ((3, 4, 2, 34, 34), 12, 5, 0),   # N-MNIST's first layer (events)
    ((3, 4, 12, 15, 15), 32, 5, 0),  # its second layer (spikes); 11×11 conv, pool reads 10×10
    ((2, 3, 3, 11, 13), 5, 3, 1),    # odd sizes, zero padding: last row/column not pooled
    ((2, 2, 17, 9, 9), 20, 4, 2),    # more than 16 inputs and outputs, neither a multiple of 16
])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("counts", [False, True])
def test_conv_pool_equals_dense(shape, out_ch, k, pad, channels_last, counts):
    torch.manual_seed(sum(shape) + out_ch)
    x = _events(shape, 0.08, seed=sum(shape), counts=counts)
    _compare(x, nn.Conv2d(shape[2], out_ch, k, padding=pad), channels_last)


@pytest.mark.parametrize("shape, out_ch, k, pad", [
    ((2, 3, 12, 15, 15), 32, 5, 0),  # N-MNIST's second layer, at first-layer sparsity
    ((2, 3, 3, 11, 13), 5, 3, 1),
    ((2, 2, 17, 9, 9), 20, 4, 2),
])
@pytest.mark.parametrize("channels_last", [False, True])
def test_conv_pool_scatter_path_equals_dense(shape, out_ch, k, pad, channels_last):
    """Inputs with fewer nonzeros than pooling windows take the scatter path (forward and weight
    gradient), the others the per-window gather: at 0.5 % density these layers all scatter."""
    torch.manual_seed(out_ch)
    x = _events(shape, 0.005, seed=out_ch, counts=True)
    windows = ((shape[3] + 2 * pad - k + 1) // 2) * ((shape[4] + 2 * pad - k + 1) // 2)
    assert 0 < (x != 0).flatten(2).sum(-1).max() < windows
    _compare(x, nn.Conv2d(shape[2], out_ch, k, padding=pad), channels_last)


@pytest.mark.parametrize("density", [0.0, 0.05, 0.2])
def test_ties_route_to_the_first_maximum_like_torch(density):
    """Weights and bias on a 1/8 grid and binary inputs make every sum exact, so equal window
    values are exact ties in both computations: the forward must be bit-identical, and the
    gradient must reach the same (first) winner as torch's or it lands on other inputs."""
    torch.manual_seed(3)
    conv = nn.Conv2d(12, 32, 5)
    with torch.no_grad():
        conv.weight.copy_(torch.randint(-2, 3, conv.weight.shape) / 8)
        conv.bias.copy_(torch.randint(-2, 3, conv.bias.shape) / 8)
    x = _events((2, 3, 12, 15, 15), density, seed=4)
    windows = F.unfold(conv(x.flatten(0, 1)).detach()[..., :10, :10].reshape(-1, 1, 10, 10), 2,
                       stride=2)
    tied = (windows == windows.max(1, keepdim=True).values).sum(1) > 1
    assert tied.float().mean() > 0.05
    _compare(x, conv, channels_last=True, exact=True, max_density=1.0)


def test_all_zero_input_gives_bias_and_first_position_gradients():
    conv = nn.Conv2d(2, 4, 3)
    x = torch.zeros(1, 2, 2, 8, 8, requires_grad=True)
    out = sparse.conv_pool(x, conv, nn.MaxPool2d(2))
    assert torch.equal(out, conv.bias.detach().expand(1, 2, 3, 3, 4))
    g = torch.ones_like(out)
    gx, gw, gb = torch.autograd.grad(out, [x, conv.weight, conv.bias], g)
    assert torch.equal(gw, torch.zeros_like(gw))
    assert torch.equal(gb, torch.full((4,), 18.0))
    # every window's top-left output wins: input (2i + a, 2j + b) gets Σ_o W[o, :, a, b]
    want = torch.zeros(2, 8, 8)
    for i in range(3):
        for j in range(3):
            want[:, 2 * i:2 * i + 3, 2 * j:2 * j + 3] += conv.weight.detach().sum(0)
    torch.testing.assert_close(gx[0], want.expand(2, 2, 8, 8), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("reset, segment, counts", [
    ("subtract", 3, False), ("zero", 3, True), ("subtract", 16, True)])
def test_fused_blocks_equal_layers_with_state_gradients(reset, segment, counts, monkeypatch):
    """hidden_blocks against Conv → MaxPool → Leaky → Conv → MaxPool → Leaky (reference loops) →
    Flatten → Linear, from membranes that need a gradient, with a loss on the final membranes
    too; 7 steps in backward segments of 3, 3, 1 (or one of 7); event counts; layers without
    bias."""
    monkeypatch.setattr(sparse, "SEGMENT", segment)
    torch.manual_seed(1)
    conv1, conv2, pool = nn.Conv2d(2, 12, 5), nn.Conv2d(12, 32, 5, bias=counts), nn.MaxPool2d(2)
    fc = nn.Linear(800, 10, bias=not counts)
    with torch.no_grad():
        conv1.weight.mul_(4 / (1 + counts))
        conv2.weight.mul_(3)
    frames = _events((7, 3, 2, 34, 34), 0.05, seed=9, counts=counts)
    u01 = (torch.rand(3, 12, 15, 15) * 1.5).requires_grad_()
    u02 = (torch.rand(3, 32, 5, 5) * 1.5).requires_grad_()
    n1 = Leaky(0.7, threshold=0.9, reset=reset, surrogate=ATan(3.0), backend="reference")
    n2 = Leaky(0.4, threshold=1.1, reset=reset, surrogate=ATan(2.0), backend="reference")
    n1.v, n2.v = u01, u02
    spikes1 = n1(_dense(frames, conv1).permute(0, 1, 4, 2, 3))
    spikes2 = n2(_dense(spikes1, conv2).permute(0, 1, 4, 2, 3))
    assert 0.02 < spikes1.mean() < 0.6 and 0.02 < spikes2.mean() < 0.6
    wants = [fc(spikes2.flatten(2)), n1.v.permute(0, 2, 3, 1), n2.v.permute(0, 2, 3, 1)]
    got = sparse.hidden_blocks(
        frames, conv1, pool, sparse.LeakyArgs(u01.permute(0, 2, 3, 1), 0.7, 0.9, reset == "zero",
                                              ATan(3.0)),
        conv2, pool, sparse.LeakyArgs(u02.permute(0, 2, 3, 1), 0.4, 1.1, reset == "zero",
                                      ATan(2.0)), fc)
    for a, b in zip(got, wants, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    gen = torch.Generator().manual_seed(2)
    gs = [torch.randn(w.shape, generator=gen) for w in wants]
    params = [p for p in (conv1.weight, conv1.bias, conv2.weight, conv2.bias, fc.weight, fc.bias,
                          u01, u02) if p is not None]
    ref = torch.autograd.grad(sum((w * g).sum() for w, g in zip(wants, gs, strict=True)), params)
    out = torch.autograd.grad(sum((w * g).sum() for w, g in zip(got, gs, strict=True)), params)
    for a, b in zip(out, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * b.abs().max().item())


def _firing_net():
    torch.manual_seed(0)
    net = models.build("nmnist-csnn")
    with torch.no_grad():  # strong enough weights that both hidden layers spike
        net.net[0].module.weight.mul_(6)
        net.net[3].module.weight.mul_(4)
        net.net[7].module.weight.mul_(4)
    return net


def _run(net, frames, dense):
    SF.reset(net)
    net.zero_grad()
    spikes, mem = net.net(frames) if dense else net(frames)
    (spikes.sum() + mem.pow(2).sum()).backward()
    return spikes, mem, [p.grad.clone() for p in net.parameters()]


@pytest.mark.parametrize("fused", [True, False])
def test_nmnist_model_sparse_path_equals_dense_layers(fused):
    net = _firing_net()
    net.net[2].record = not fused  # recording runs the blocks layer by layer
    frames = _events((16, 3, 2, 34, 34), 0.05, seed=1)
    assert sparse.conv_pool(frames, net.net[0].module, net.net[1].module) is not None
    hidden = net.net[:3](frames)
    assert 0.01 < hidden.mean() < 0.5  # the second block really sees spikes
    SF.reset(net)
    spikes, mem, grads = _run(net, frames, dense=False)
    states = [net.net[i].v.clone() for i in (2, 5, 8)]
    spikes_d, mem_d, grads_d = _run(net, frames, dense=True)
    assert spikes.sum() > 0
    assert torch.equal(spikes, spikes_d)
    torch.testing.assert_close(mem, mem_d, rtol=1e-5, atol=1e-5)
    for a, b in zip(grads, grads_d, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * b.abs().max().item())
    for i, v in zip((2, 5, 8), states, strict=True):  # state keeps the documented layout
        assert v.shape == net.net[i].v.shape
        torch.testing.assert_close(v, net.net[i].v, rtol=1e-5, atol=1e-5)


def test_nmnist_model_state_carries_over_and_recording_keeps_layouts():
    net = _firing_net()
    frames = _events((6, 2, 2, 34, 34), 0.05, seed=5)
    with torch.no_grad():
        first = net(frames[:3])[1]
        second = net(frames[3:])[1]  # no reset: continues from the state of the first half
        SF.reset(net)
        whole = net(frames)[1]
        torch.testing.assert_close(torch.cat([first, second]), whole, rtol=1e-5, atol=1e-5)
        SF.reset(net)
        net.net[2].record = True
        net(frames)
        trace = net.net[2].v_seq
        SF.reset(net)
        net.net(frames)
        assert trace.shape == (6, 2, 12, 15, 15)
        torch.testing.assert_close(trace, net.net[2].v_seq, rtol=1e-5, atol=1e-5)


def test_unsupported_inputs_and_layers_fall_back():
    conv, pool = nn.Conv2d(2, 4, 3), nn.MaxPool2d(2)
    x = _events((2, 1, 2, 10, 10), 0.05, seed=2)
    assert sparse.conv_pool(x, conv, pool) is not None
    assert sparse.conv_pool(torch.rand(2, 1, 2, 10, 10), conv, pool) is None  # dense input
    assert sparse.conv_pool(x.double(), conv.double(), pool) is None
    assert sparse.conv_pool(x.to("meta"), conv, pool) is None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert sparse.conv_pool(x, conv, pool) is None
    assert sparse.conv_pool(x, nn.Conv2d(2, 4, 3, stride=2), pool) is None
    assert sparse.conv_pool(x, nn.Conv2d(2, 4, 9), pool) is None  # kernel above MAX_KERNEL
    assert sparse.conv_pool(x, conv, nn.MaxPool2d(3)) is None
    assert sparse.conv_pool(x, conv, nn.MaxPool2d(2, ceil_mode=True)) is None
    assert sparse.conv_pool(_events((1, 1, 2, 4, 70), 0.05, 3), conv, pool) is None  # too wide
    assert sparse.conv_pool(x, nn.Conv2d(3, 4, 3), pool) is None  # channel mismatch


@pytest.mark.parametrize("case", ["dense frames", "no kernel library"])
def test_nmnist_model_falls_back_to_dense_layers(case, monkeypatch):
    net = _firing_net()
    frames = torch.rand(3, 2, 2, 34, 34)
    if case == "no kernel library":
        frames = _events(frames.shape, 0.05, seed=6)
        monkeypatch.setattr(sparse, "library", lambda: None)
        assert sparse.conv_pool(frames, net.net[0].module, net.net[1].module) is None
    with torch.no_grad():
        got = net(frames)
        SF.reset(net)
        want = net.net(frames)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
