"""The Triton backend against the reference loops: identical spikes, gradients within 1e-5.

Without a GPU the kernels run in Triton's interpreter on CPU tensors (tests/conftest.py), where
a program costs milliseconds per time step, so the cases are few and short: every IF/LIF mode,
reset and surrogate with and without detach_reset, every Leaky reset and surrogate with a
learnable (scalar or per-neuron) β, each on one of shapes that include several programs and
sizes that are not a multiple of the block (1024 neurons).
"""

import itertools

import pytest
import torch
from test_kernels import IF_LIF_CASES, assert_grad_close, run_with_grads

from spikeforge.kernels import reference
from spikeforge.neuron import IF, LIF, Leaky, RLeaky
from spikeforge.surrogate import ATan, FastSigmoid, Sigmoid

#: [T, ...]: one program with a ragged block, two programs (1100 = 1024 + 76), a 4-d layer.
SHAPES = [(3, 2, 5), (2, 1100), (4, 2, 3, 4, 4), (6, 1, 30)]


@pytest.fixture(scope="module")
def triton_gpu(triton_device):
    from spikeforge.kernels import triton_gpu

    return triton_gpu


def _cycled(cases):
    """Each case paired with one of SHAPES in turn (every shape is used, no case repeats)."""
    return [(*case, shape) for case, shape in zip(cases, itertools.cycle(SHAPES))]


IF_LIF = _cycled([(*case, detach) for case in IF_LIF_CASES for detach in (False, True)])


@pytest.mark.parametrize("tau, decay_input, v_reset, surrogate, detach_reset, shape", IF_LIF)
def test_if_lif_matches_reference(triton_gpu, triton_device, tau, decay_input, v_reset,
                                  surrogate, detach_reset, shape):
    g = torch.Generator().manual_seed(hash((shape, tau, v_reset, detach_reset)) % 2**31)
    x = torch.randn(shape, generator=g) * 1.5 + 0.8
    v = torch.randn(shape[1:], generator=g) * 0.3
    grads = [torch.randn(shape, generator=g), torch.randn(shape, generator=g)]
    args = (tau, decay_input, 1.0, v_reset, surrogate, detach_reset)
    out, grad = run_with_grads(lambda *t: triton_gpu.if_lif(*t, *args), triton_device, [x, v],
                               grads)
    ref_out, ref_grad = run_with_grads(lambda *t: reference.if_lif(*t, *args), "cpu", [x, v],
                                       grads)
    assert ref_out[0].sum() > 0, "the case must produce spikes"
    assert torch.equal(out[0], ref_out[0]) and torch.equal(out[1], ref_out[1])
    for r, o in zip(ref_grad, grad, strict=True):
        assert_grad_close(r, o)


LEAKY = _cycled([(zero, per_neuron, sg) for zero in (False, True) for per_neuron in (False, True)
                 for sg in (ATan(), Sigmoid(), FastSigmoid())])


@pytest.mark.parametrize("reset_zero, per_neuron_beta, surrogate, shape", LEAKY)
def test_leaky_matches_reference_with_learnable_beta(triton_gpu, triton_device, reset_zero,
                                                     per_neuron_beta, surrogate, shape):
    g = torch.Generator().manual_seed(hash((shape, reset_zero, per_neuron_beta)) % 2**31)
    x = torch.randn(shape, generator=g) * 1.5 + 0.8
    u = torch.randn(shape[1:], generator=g) * 0.5
    beta = torch.rand(shape[-1:] if per_neuron_beta else (), generator=g) * 0.9 + 0.05
    grads = [torch.randn(shape, generator=g), torch.randn(shape, generator=g)]
    args = (1.0, reset_zero, surrogate)
    out, grad = run_with_grads(lambda *t: triton_gpu.leaky(*t, *args), triton_device,
                               [x, u, beta], grads)
    ref_out, ref_grad = run_with_grads(lambda *t: reference.leaky(*t, *args), "cpu",
                                       [x, u, beta], grads)
    assert ref_out[0].sum() > 0
    assert torch.equal(out[0], ref_out[0]) and torch.equal(out[1], ref_out[1])
    for r, o in zip(ref_grad, grad, strict=True):  # ∂L/∂X, ∂L/∂U0, ∂L/∂β
        assert_grad_close(r, o)


def test_repeated_input_view_equals_materialised_copy(triton_gpu, triton_device):
    """A direct-encoded input (stride 0 over T) is read once and gives its copy's result."""
    x = (torch.rand(2, 3, 5, device=triton_device) * 2).requires_grad_()
    seq = x.unsqueeze(0).expand(4, 2, 3, 5)
    v = torch.zeros(2, 3, 5, device=triton_device)
    s1, v1 = triton_gpu.if_lif(seq, v, 2.0, True, 1.0, 0.0, ATan(), False)
    (g1,) = torch.autograd.grad(s1.sum() + v1.sum(), x)
    s2, v2 = triton_gpu.if_lif(seq.contiguous(), v, 2.0, True, 1.0, 0.0, ATan(), False)
    (g2,) = torch.autograd.grad(s2.sum() + v2.sum(), x)
    assert torch.equal(s1, s2) and torch.equal(v1, v2) and torch.equal(g1, g2)
    assert 0 < s1.sum() < s1.numel()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_inputs(triton_gpu, triton_device, dtype):
    """Narrow inputs run (computed in float32 inside) and return the input dtype."""
    x = (torch.randn(3, 2, 8) + 0.5).to(device=triton_device, dtype=dtype).requires_grad_()
    u = torch.zeros(2, 8, device=triton_device, dtype=dtype)
    beta = torch.tensor(0.75, device=triton_device, dtype=dtype)
    s, m = triton_gpu.leaky(x, u, beta, 1.0, False, ATan())
    s_ref, _ = reference.leaky(x.detach().float().cpu(), u.float().cpu(), beta.float().cpu(),
                               1.0, False, ATan())
    assert s.dtype == dtype and m.dtype == dtype and torch.equal(s.float().cpu(), s_ref)
    (gx,) = torch.autograd.grad(m.float().sum(), x)
    assert gx.dtype == dtype and torch.isfinite(gx.float()).all()
    s, v = triton_gpu.if_lif(x, u, 2.0, True, 1.0, 0.0, ATan(), False)
    assert s.dtype == dtype and v.dtype == dtype


def test_eval_mode_needs_no_graph(triton_gpu, triton_device):
    x = torch.randn(4, 3, 5)
    with torch.no_grad():
        s, v = triton_gpu.if_lif(x.to(triton_device), torch.zeros(3, 5, device=triton_device),
                                 None, True, 1.0, 0.0, ATan(), False)
    s_ref, v_ref = reference.if_lif(x, torch.zeros(3, 5), None, True, 1.0, 0.0, ATan(), False)
    assert not s.requires_grad and torch.equal(s.cpu(), s_ref) and torch.equal(v.cpu(), v_ref)


NEURONS = [
    pytest.param(lambda b: LIF(tau=2.0, backend=b), id="lif"),
    pytest.param(lambda b: IF(v_reset=None, detach_reset=True, backend=b), id="if-soft"),
    pytest.param(lambda b: Leaky(0.8, learn_beta=True, reset="zero", backend=b), id="leaky"),
    pytest.param(lambda b: RLeaky(torch.linspace(0.2, 0.9, 11), 11, learn_beta=True, backend=b),
                 id="rleaky-linear"),
    pytest.param(lambda b: RLeaky(0.7, 11, recurrence="one_to_one", reset="zero", backend=b),
                 id="rleaky-one-to-one"),
]


@pytest.mark.parametrize("make", NEURONS)
def test_neuron_modules_equal_reference_over_two_calls(triton_device, make):
    """The modules with ``backend="triton"``, their state carried between calls, parameters
    learnable: the reference backend's spikes, input and parameter gradients."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 2, 11) + 0.4
    ref, fused = make("reference"), make("triton").to(triton_device)
    fused.load_state_dict(ref.state_dict())
    assert fused.fused_backend(x.to(triton_device)) == "triton"
    outs = []
    for neuron, device in ((ref, "cpu"), (fused, triton_device)):
        xi = x.clone().to(device).requires_grad_()
        y = torch.cat([neuron(xi[0]), neuron(xi[1])])
        y.sum().backward()
        outs.append((y.detach().cpu(), xi.grad.cpu(),
                     [p.grad.cpu() for p in neuron.parameters() if p.requires_grad]))
    assert outs[0][0].sum() > 0 and torch.equal(outs[0][0], outs[1][0])
    assert_grad_close(outs[0][1], outs[1][1])
    for p_ref, p_fused in zip(outs[0][2], outs[1][2], strict=True):
        assert_grad_close(p_ref, p_fused)
