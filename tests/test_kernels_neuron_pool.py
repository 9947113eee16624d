"""IF/LIF + MaxPool2d(2) as one kernel against the two layers run by the reference loop."""

import pytest
import torch
from torch import nn

from spikeforge import functional as SF
from spikeforge import models
from spikeforge.kernels import build, neuron_pool
from spikeforge.kernels.neuron_pool import lif_pool
from spikeforge.layer import channels_last
from spikeforge.neuron import IF, LIF
from spikeforge.surrogate import ATan, Sigmoid

pytestmark = pytest.mark.skipif(not build.loads(neuron_pool.library),
                                reason="no compiled CPU kernels here")

NEURONS = [
    pytest.param(lambda b: IF(surrogate=ATan(), backend=b), id="if-hard"),
    pytest.param(lambda b: IF(v_reset=None, backend=b), id="if-soft"),
    pytest.param(lambda b: LIF(tau=2.0, surrogate=ATan(), backend=b, detach_reset=True),
                 id="lif-decay-detach"),
    pytest.param(lambda b: LIF(tau=3.0, decay_input=False, v_reset=None, backend=b),
                 id="lif-nodecay-soft"),
]


def _pooled(neuron, x, steps=None):
    """The two layers as separate modules (torch's max pool), [T, B, C, H/2, W/2]."""
    x_seq = x.unsqueeze(0).expand(steps, *x.shape) if steps else x
    y = neuron(x_seq)
    t, b = y.shape[:2]
    return nn.functional.max_pool2d(y.reshape(t * b, *y.shape[2:]), 2).reshape(
        t, b, *y.shape[2:3], y.shape[3] // 2, y.shape[4] // 2)


def _grads(out, inputs, g):
    return torch.autograd.grad((out * g).sum(), inputs)


def _channels_last(x):
    return channels_last(x.detach()).requires_grad_()


def _is_channels_last(t):
    return t.movedim(-3, -1).is_contiguous() and not t.is_contiguous()


LAYOUTS = [pytest.param(False, id="nchw"), pytest.param(True, id="channels-last")]


def _check_layout(out, fused, x_in, channels_last):
    """The kernel of the input's layout ran, and its outputs and gradient keep the layout."""
    name = "_LifPoolChannelsLastBackward" if channels_last else "_LifPoolBackward"
    assert out.grad_fn.name() == name
    grad = torch.autograd.grad(out, x_in, torch.ones(out.shape), retain_graph=True)[0]
    for t in (out, fused.v, grad):
        assert _is_channels_last(t) == channels_last


@pytest.mark.parametrize("channels_last", LAYOUTS)
@pytest.mark.parametrize("make", NEURONS)
@pytest.mark.parametrize("shape", [(4, 3, 2, 6, 6), (1, 2, 3, 5, 7), (7, 2, 4, 8, 4)])
def test_sequence_input_matches_the_separate_layers(make, shape, channels_last):
    g = torch.Generator().manual_seed(sum(shape))
    x = (torch.rand(shape, generator=g) * 2.5).requires_grad_()
    x_in = _channels_last(x) if channels_last else x
    fused, ref = make("auto"), make("reference")
    out = lif_pool(fused, nn.MaxPool2d(2), x_in)
    expect = _pooled(ref, x)
    assert expect.sum() > 0
    assert torch.equal(out, expect)
    assert torch.equal(fused.v, ref.v)
    _check_layout(out, fused, x_in, channels_last)
    gout = torch.randn(out.shape, generator=g)
    torch.testing.assert_close(_grads(out, [x_in], gout)[0], _grads(expect, [x], gout)[0],
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("channels_last", LAYOUTS)
@pytest.mark.parametrize("make", NEURONS)
def test_static_input_is_read_once_and_its_gradient_summed_over_time(make, channels_last):
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(3, 4, 6, 6, generator=g) * 0.9).requires_grad_()
    x_in = _channels_last(x) if channels_last else x
    fused, ref = make("auto"), make("reference")
    out = lif_pool(fused, nn.MaxPool2d(2), x_in, steps=5)
    expect = _pooled(ref, x, steps=5)
    assert out.shape == (5, 3, 4, 3, 3) and torch.equal(out, expect)
    _check_layout(out, fused, x_in, channels_last)
    gout = torch.randn(out.shape, generator=g)
    torch.testing.assert_close(_grads(out, [x_in], gout)[0], _grads(expect, [x], gout)[0],
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("channels_last", LAYOUTS)
def test_ties_route_the_gradient_to_the_first_maximum_as_torch_does(channels_last):
    """Binary windows with several spikes (or none): torch's max pool picks the first."""
    x = torch.tensor([[[[1.0, 1.0], [1.0, 1.0]]], [[[0.0, 0.0], [0.0, 0.0]]],
                      [[[0.0, 2.0], [2.0, 0.0]]], [[[0.0, 0.0], [2.0, 2.0]]],
                      [[[0.0, 0.0], [0.0, 2.0]]]])
    x = x.view(1, 1, 5, 2, 2)  # one sample, 5 channels of one window each
    x = _channels_last(x) if channels_last else x.requires_grad_()
    out = lif_pool(IF(), nn.MaxPool2d(2), x)
    assert out.flatten().tolist() == [1.0, 0.0, 1.0, 1.0, 1.0]
    out.sum().backward()
    fired = x.grad[0, 0]
    # the winner gets Θ'(H − 1) (ATan at H − 1 = 0: 1), the others nothing
    assert fired[0].tolist() == [[1.0, 0.0], [0.0, 0.0]]
    assert fired[2, 0, 1] > 0 and fired[2, 1, 0] == 0 and fired[2, 0, 0] == 0
    assert fired[1, 0, 0] > 0 and fired[1].flatten()[1:].abs().sum() == 0
    assert fired[3, 1, 0] > 0 and fired[3].flatten()[[0, 1, 3]].abs().sum() == 0
    assert fired[4, 1, 1] > 0 and fired[4].flatten()[:3].abs().sum() == 0


@pytest.mark.parametrize("channels_last", LAYOUTS)
def test_state_carries_across_calls_with_its_gradient(channels_last):
    g = torch.Generator().manual_seed(3)
    x = (torch.rand(6, 2, 3, 4, 4, generator=g) * 1.5).requires_grad_()
    x_in = _channels_last(x) if channels_last else x
    fused, ref = LIF(tau=2.0), LIF(tau=2.0, backend="reference")
    out = torch.cat([lif_pool(fused, nn.MaxPool2d(2), x_in[:3]),
                     lif_pool(fused, nn.MaxPool2d(2), x_in[3:])])
    expect = torch.cat([_pooled(ref, x[:3]), _pooled(ref, x[3:])])
    assert torch.equal(out, expect) and torch.equal(fused.v, ref.v)
    gout = torch.randn(expect.shape, generator=g)
    torch.testing.assert_close(_grads(out, [x_in], gout)[0], _grads(expect, [x], gout)[0],
                               rtol=1e-5, atol=1e-6)


def test_recording_neurons_other_surrogates_and_average_pools_run_the_layers_as_they_are():
    x = (torch.rand(3, 2, 2, 4, 4) * 1.5).requires_grad_()
    neuron = IF(record=True)
    out = lif_pool(neuron, nn.MaxPool2d(2), x)
    assert neuron.s_seq.shape == (3, 2, 2, 4, 4) and torch.equal(out, _pooled(IF(), x))
    sigmoid = lif_pool(IF(surrogate=Sigmoid()), nn.MaxPool2d(2), x)
    assert sigmoid.grad_fn.name() != "_LifPoolBackward"
    expect = _pooled(IF(surrogate=Sigmoid(), backend="reference"), x)
    gout = torch.rand(expect.shape)
    torch.testing.assert_close(_grads(sigmoid, [x], gout)[0], _grads(expect, [x], gout)[0])
    avg = lif_pool(IF(), nn.AvgPool2d(2), x)
    assert avg.shape == (3, 2, 2, 2, 2) and set(avg.unique().tolist()) <= {0, 0.25, 0.5, 0.75, 1}
    # a channels-last input stays channels-last, as through the fused kernel
    layers = lif_pool(IF(backend="reference"), nn.MaxPool2d(2), _channels_last(x))
    assert _is_channels_last(layers) and torch.equal(layers, _pooled(IF(), x))


@pytest.mark.parametrize("channels_last", LAYOUTS)
@pytest.mark.parametrize("default", [torch.float64, torch.bfloat16], ids=str)
def test_float32_kernels_under_another_default_dtype(default, channels_last):
    """The kernels write float32 whatever torch's default dtype is (a float64 default once gave
    wrong spikes, a bfloat16 one a corrupted heap)."""
    g = torch.Generator().manual_seed(5)
    x = (torch.rand(3, 2, 4, 6, 6, generator=g) * 2.5).requires_grad_()
    x_in = _channels_last(x) if channels_last else x
    expect = _pooled(IF(backend="reference"), x)
    gout = torch.randn(expect.shape, generator=g)
    grad = _grads(expect, [x], gout)[0]
    previous = torch.get_default_dtype()
    torch.set_default_dtype(default)
    try:
        for _ in range(3):
            out = lif_pool(IF(), nn.MaxPool2d(2), x_in)
            assert out.dtype == torch.float32 and torch.equal(out, expect)
            torch.testing.assert_close(_grads(out, [x_in], gout)[0], grad, rtol=1e-5, atol=1e-6)
    finally:
        torch.set_default_dtype(previous)


@pytest.mark.parametrize("sequence", [False, True], ids=["static", "sequence"])
def test_csnn_fused_equals_csnn_on_the_reference_loop(sequence):
    torch.manual_seed(0)
    fused = models.CSNN(channels=8, steps=3)
    ref = models.CSNN(channels=8, steps=3)
    ref.load_state_dict(fused.state_dict())
    for m in ref.modules():
        if isinstance(m, LIF):
            m.backend = "reference"
    x = torch.rand(4, 1, 28, 28) * 3
    x = x.unsqueeze(0).expand(3, *x.shape).contiguous() if sequence else x
    out, expect = fused(x), ref(x)
    seen, todo = set(), [out.grad_fn]  # both IF-MaxPool blocks ran the channels-last kernel
    while todo:
        node = todo.pop()
        if node is not None and node not in seen:
            seen.add(node)
            todo += [n for n, _ in node.next_functions]
    assert sorted(n.name() for n in seen if "LifPool" in n.name()) == [
        "_LifPoolChannelsLastBackward"] * 2
    assert torch.equal(out, expect)
    SF.mse_rate(out, torch.arange(4)).backward()
    SF.mse_rate(expect, torch.arange(4)).backward()
    for (name, a), b in zip(fused.named_parameters(), ref.parameters(), strict=True):
        assert b.grad.abs().sum() > 0, name
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-6, msg=name)
