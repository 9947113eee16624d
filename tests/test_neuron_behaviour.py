"""Gradients against an independent autograd loop, step vs multi-step, state, dtypes, errors."""

import math

import pytest
import torch

from spikeforge import functional as SF
from spikeforge import kernels
from spikeforge.neuron import IF, LIF, Leaky, RLeaky
from spikeforge.surrogate import ATan


class _ATanSpike(torch.autograd.Function):
    """The test's own spike function: Θ forward, (α/2)/(1+(πα x/2)²) backward, α = 2."""

    @staticmethod
    def forward(ctx, x, strict):
        ctx.save_for_backward(x)
        return (x > 0).double() if strict else (x >= 0).double()

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g / (1 + (math.pi * x) ** 2), None


def lif_loop(x_seq, tau, v_reset, detach_reset, decay_input=True):
    v = torch.zeros_like(x_seq[0]) + (v_reset or 0.0)
    out_s, out_v = [], []
    for x in x_seq:
        vr = v_reset or 0.0
        if tau is None:
            h = v + x
        elif decay_input:
            h = v + (x - (v - vr)) / tau
        else:
            h = v - (v - vr) / tau + x
        s = _ATanSpike.apply(h - 1.0, False)
        sd = s.detach() if detach_reset else s
        v = h * (1 - sd) + v_reset * sd if v_reset is not None else h - sd
        out_s.append(s)
        out_v.append(v)
    return torch.stack(out_s), torch.stack(out_v)


def leaky_loop(x_seq, beta, zero):
    u = torch.zeros_like(x_seq[0])
    out_s, out_u = [], []
    for x in x_seq:
        r = (u.detach() > 1.0).double()
        u = beta * (1 - r) * u + x if zero else beta * u + x - r
        out_s.append(_ATanSpike.apply(u - 1.0, True))
        out_u.append(u)
    return torch.stack(out_s), torch.stack(out_u)


def _grads(fn, x, w_s, w_v):
    x = x.clone().requires_grad_(True)
    s, v = fn(x)
    ((s * w_s).sum() + (v * w_v).sum()).backward()
    return s.detach(), v.detach(), x.grad


@pytest.mark.parametrize("steps", [1, 4, 25])
@pytest.mark.parametrize("kind", ["if", "lif", "lif-soft", "lif-nodecay", "lif-reset-neg"])
@pytest.mark.parametrize("detach_reset", [False, True])
def test_if_lif_gradients_match_independent_loop(steps, kind, detach_reset):
    tau, v_reset, decay = {
        "if": (None, 0.0, True), "lif": (2.0, 0.0, True), "lif-soft": (3.0, None, True),
        "lif-nodecay": (2.5, 0.0, False), "lif-reset-neg": (2.0, -0.25, True),
    }[kind]
    g = torch.Generator().manual_seed(steps)
    x = torch.randn(steps, 3, 5, generator=g, dtype=torch.float64) * 3 + 2
    w_s, w_v = torch.randn(2, *x.shape, generator=g, dtype=torch.float64)
    kernel = kernels.get_backend("reference")
    got = _grads(lambda i: kernel.if_lif(i, torch.full_like(i[0], v_reset or 0.0), tau, decay,
                                         1.0, v_reset, ATan(), detach_reset), x, w_s, w_v)
    want = _grads(lambda i: lif_loop(i, tau, v_reset, detach_reset, decay), x, w_s, w_v)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    neuron = IF(v_reset=v_reset, detach_reset=detach_reset) if tau is None else LIF(
        tau=tau, v_reset=v_reset, decay_input=decay, detach_reset=detach_reset)
    module = _grads(lambda i: (neuron(i), torch.zeros_like(i)), x, w_s, w_v)
    spikes_only = _grads(lambda i: (lif_loop(i, tau, v_reset, detach_reset, decay)[0],
                                    torch.zeros_like(i)), x, w_s, w_v)
    torch.testing.assert_close(module[2], spikes_only[2], rtol=1e-10, atol=1e-12)
    assert got[0].sum() > 0, "test input should make the neuron fire"


@pytest.mark.parametrize("steps", [1, 4, 25])
@pytest.mark.parametrize("zero", [False, True])
def test_leaky_gradients_match_independent_loop(steps, zero):
    g = torch.Generator().manual_seed(10 + steps)
    x = torch.randn(steps, 4, 3, generator=g, dtype=torch.float64) * 1.5
    w_s, w_v = torch.randn(2, *x.shape, generator=g, dtype=torch.float64)
    neuron = Leaky(0.75, reset="zero" if zero else "subtract", output="both").double()
    got = _grads(lambda i: (neuron.reset_state(), neuron(i))[1], x, w_s, w_v)
    want = _grads(lambda i: leaky_loop(i, 0.75, zero), x, w_s, w_v)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_learnable_beta_gets_the_gradient_of_the_equations():
    x = torch.randn(6, 2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    neuron = Leaky(0.6, learn_beta=True, output="both").double()
    _, u = neuron(x)
    u.sum().backward()
    beta = torch.tensor(0.6, dtype=torch.float64, requires_grad=True)
    _, u_ref = leaky_loop(x, beta, False)
    u_ref.sum().backward()
    torch.testing.assert_close(neuron.beta.grad, beta.grad)


@pytest.mark.parametrize("zero", [False, True])
def test_rleaky_gradients_match_independent_loop(zero):
    torch.manual_seed(0)
    n = RLeaky(0.75, 3, recurrence="linear", reset="zero" if zero else "subtract",
               output="both").double()
    x = torch.randn(8, 2, 3, dtype=torch.float64) * 2 + 0.5
    w_s, w_v = torch.randn(2, *x.shape, dtype=torch.float64)
    weight, bias = n.recurrent.weight.detach(), n.recurrent.bias.detach()

    def loop(inp):
        u, s = torch.zeros_like(inp[0]), torch.zeros_like(inp[0])
        out_s, out_u = [], []
        for xt in inp:
            r = (u.detach() > 1.0).double()
            base = 0.75 * u + xt + s @ weight.T + bias
            u = (1 - r) * base if zero else base - r
            s = _ATanSpike.apply(u - 1.0, True)
            out_s.append(s)
            out_u.append(u)
        return torch.stack(out_s), torch.stack(out_u)

    got = _grads(lambda i: (n.reset_state(), n(i))[1], x, w_s, w_v)
    want = _grads(loop, x, w_s, w_v)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert got[0].sum() > 0


@pytest.mark.parametrize("make", [
    lambda: LIF(tau=2.0), lambda: IF(v_reset=None), lambda: Leaky(0.5, output="both"),
    lambda: RLeaky(0.9, 4, output="both"), lambda: RLeaky(0.9, 4, recurrence="one_to_one"),
])
def test_step_by_step_equals_multi_step_and_reset_restores(make):
    torch.manual_seed(1)
    neuron = make()
    x = torch.rand(7, 3, 4) * 2
    multi = neuron(x)
    SF.reset(neuron)
    steps = [neuron.step(xt) for xt in x]
    if isinstance(multi, tuple):
        for i, part in enumerate(multi):
            assert torch.equal(part, torch.stack([s[i] for s in steps]))
    else:
        assert torch.equal(multi, torch.stack(steps))
    SF.reset(neuron)
    again = neuron(x)
    assert torch.equal(again[0] if isinstance(again, tuple) else again,
                       multi[0] if isinstance(multi, tuple) else multi)


def test_state_is_not_in_state_dict_and_round_trips():
    a = RLeaky(0.9, 4, learn_beta=True)
    a(torch.rand(3, 2, 4))
    assert a.v is not None and a.spikes is not None
    keys = set(a.state_dict())
    assert keys == {"beta", "recurrent.weight", "recurrent.bias"}
    b = RLeaky(0.5, 4, learn_beta=True)
    b.load_state_dict(a.state_dict())
    SF.reset(a)
    x = torch.rand(5, 2, 4)
    assert torch.equal(a(x), b(x))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("make", [lambda: LIF(), lambda: Leaky(0.5), lambda: RLeaky(0.9, 6)])
def test_runs_in_float32_and_bfloat16(make, dtype):
    neuron = make().to(dtype)
    x = (torch.rand(4, 2, 6) * 3).to(dtype).requires_grad_(True)
    s = neuron(x)
    assert s.dtype == dtype
    s.sum().backward()
    assert x.grad is not None and x.grad.dtype == dtype


def test_recording_keeps_results_and_traces_steps():
    x = torch.rand(5, 2, 3) * 2
    plain = LIF()(x)
    rec = LIF(record=True)
    assert torch.equal(rec(x), plain)
    rec.step(x[0])
    assert rec.v_seq.shape == (6, 2, 3) and rec.s_seq.shape == (6, 2, 3)


@pytest.mark.parametrize("make, match", [
    (lambda: LIF(tau=1.0), "tau must be > 1"),
    (lambda: LIF(tau=0.5, decay_input=False), "tau must be >= 1"),
    (lambda: Leaky(1.5), "beta must lie in"),
    (lambda: Leaky(-0.1), "beta must lie in"),
    (lambda: Leaky(0.5, reset="none"), "reset must be"),
    (lambda: RLeaky(0.5, 4, recurrence="dense"), "recurrence must be"),
    (lambda: LIF(v_threshold=float("nan")), "v_threshold must be a number"),
])
def test_bad_arguments_raise_value_error_naming_them(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_wrong_input_rank_is_a_clear_error():
    with pytest.raises(ValueError, match=r"x_seq must have rank >= 2"):
        LIF()(torch.rand(5))
    with pytest.raises(ValueError, match=r"x must be a tensor of rank >= 1"):
        LIF().step(torch.tensor(1.0))
    with pytest.raises(ValueError, match=r"with 4 features"):
        RLeaky(0.5, 4)(torch.rand(3, 2, 5))
