"""IF/LIF + MaxPool2d(2) as one Triton kernel against the two layers run by the reference loop
(in Triton's interpreter on CPU tensors where there is no GPU, see tests/conftest.py)."""

import pytest
import torch
from test_kernels_neuron_pool import _grads, _pooled
from torch import nn

from spikeforge.kernels.neuron_pool import lif_pool
from spikeforge.neuron import IF, LIF
from spikeforge.surrogate import ATan, FastSigmoid, Sigmoid

NEURONS = [
    pytest.param(lambda b: IF(surrogate=ATan(), backend=b), id="if-hard-atan"),
    pytest.param(lambda b: IF(v_reset=None, surrogate=Sigmoid(), backend=b), id="if-soft-sigmoid"),
    pytest.param(lambda b: LIF(tau=2.0, surrogate=FastSigmoid(), backend=b, detach_reset=True),
                 id="lif-decay-detach-fastsigmoid"),
    pytest.param(lambda b: LIF(tau=3.0, decay_input=False, v_reset=None, backend=b),
                 id="lif-nodecay-soft"),
]
#: [T, B, C, H, W]: even planes, odd height and width (the pool drops a row and a column), and
#: more windows than one program holds (2·3·16·12 = 1152 > 256 windows).
SHAPES = [(3, 2, 2, 4, 6), (2, 1, 3, 5, 7), (2, 2, 3, 32, 24)]


def _fused(make):
    """The neuron on the triton backend, refusing to run on its own: only the fused kernel may
    use it."""
    neuron = make("triton")

    def refuse(x):
        raise AssertionError("the separate layers ran instead of the fused kernel")

    neuron.forward = refuse
    return neuron


@pytest.mark.parametrize("make", NEURONS)
@pytest.mark.parametrize("shape", SHAPES)
def test_sequence_input_matches_the_separate_layers(triton_device, make, shape):
    g = torch.Generator().manual_seed(sum(shape))
    x = torch.rand(shape, generator=g) * 2.5
    v0 = torch.rand(shape[1:], generator=g) * 0.5
    fused, ref = _fused(make), make("reference")
    fused.v, ref.v = v0.to(triton_device), v0.clone().requires_grad_()
    xf = x.to(triton_device).requires_grad_()
    xr = x.clone().requires_grad_()
    out = lif_pool(fused, nn.MaxPool2d(2), xf)
    expect = _pooled(ref, xr)
    assert expect.sum() > 0
    assert torch.equal(out.cpu(), expect) and torch.equal(fused.v.cpu(), ref.v)
    gout = torch.randn(out.shape, generator=g)
    gv = torch.randn(v0.shape, generator=g)
    loss_f = (out * gout.to(triton_device)).sum() + (fused.v * gv.to(triton_device)).sum()
    loss_r = (expect * gout).sum() + (ref.v * gv).sum()
    torch.testing.assert_close(torch.autograd.grad(loss_f, xf)[0].cpu(),
                               torch.autograd.grad(loss_r, xr)[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("make", NEURONS[:2])
def test_static_input_is_read_once_and_its_gradient_summed_over_time(triton_device, make):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 4, 6, 6, generator=g) * 0.9
    xf, xr = x.to(triton_device).requires_grad_(), x.clone().requires_grad_()
    fused, ref = _fused(make), make("reference")
    out = lif_pool(fused, nn.MaxPool2d(2), xf, steps=5)
    expect = _pooled(ref, xr, steps=5)
    assert out.shape == (5, 3, 4, 3, 3) and torch.equal(out.cpu(), expect)
    gout = torch.randn(out.shape, generator=g)
    torch.testing.assert_close(_grads(out, [xf], gout.to(triton_device))[0].cpu(),
                               _grads(expect, [xr], gout)[0], rtol=1e-5, atol=1e-6)


def test_ties_route_the_gradient_to_the_first_maximum_as_torch_does(triton_device):
    """Binary windows with several spikes (or none): torch's max pool picks the first."""
    x = torch.tensor([[[[1.0, 1.0], [1.0, 1.0]]], [[[0.0, 0.0], [0.0, 0.0]]],
                      [[[0.0, 2.0], [2.0, 0.0]]]]).unsqueeze(0).to(triton_device)
    x.requires_grad_()
    out = lif_pool(IF(backend="triton"), nn.MaxPool2d(2), x)
    assert out.flatten().tolist() == [1.0, 0.0, 1.0]
    out.sum().backward()
    fired = x.grad[0, :, 0].cpu()
    assert fired[0].tolist() == [[1.0, 0.0], [0.0, 0.0]]  # ATan at H − 1 = 0: 1, to the first
    assert fired[2, 0, 1] > 0 and fired[2, 1, 0] == 0 and fired[2, 0, 0] == 0
    assert fired[1, 0, 0] > 0 and fired[1].flatten()[1:].abs().sum() == 0


def test_half_precision_input_returns_its_dtype(triton_device):
    x = (torch.rand(2, 1, 2, 4, 4) * 2).to(device=triton_device, dtype=torch.bfloat16)
    neuron = IF(backend="triton")
    out = lif_pool(neuron, nn.MaxPool2d(2), x.requires_grad_())
    expect = _pooled(IF(backend="reference"), x.detach().float().cpu())
    assert out.dtype == torch.bfloat16 and torch.equal(out.float().cpu(), expect)
    (gx,) = torch.autograd.grad(out.float().sum(), x)
    assert gx.dtype == torch.bfloat16 and torch.isfinite(gx.float()).all()
