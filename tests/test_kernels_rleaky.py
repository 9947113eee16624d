"""The one-node RLeaky (hand-written BPTT) against the per-step reference loop."""

import pytest
import torch

from spikeforge import functional as SF
from spikeforge import models
from spikeforge.neuron import RLeaky
from spikeforge.surrogate import ATan, FastSigmoid


def _pair(**kwargs):
    torch.manual_seed(0)
    ref = RLeaky(backend="reference", **kwargs)
    fused = RLeaky(backend="auto", **kwargs)
    fused.load_state_dict(ref.state_dict())
    return ref, fused


def _run(neuron, chunks, grads):
    xs = [c.clone().requires_grad_() for c in chunks]
    outs = [neuron(x) for x in xs]
    spikes = torch.cat([o[0] if isinstance(o, tuple) else o for o in outs])
    mems = neuron.v_seq if neuron.record else None
    loss = (spikes * grads[0]).sum()
    if mems is not None:
        loss = loss + (torch.cat([o[1] for o in outs]) * grads[1]).sum()
    params = [p for p in neuron.parameters() if p.requires_grad]
    got = torch.autograd.grad(loss, xs + params)
    return spikes.detach(), mems, got


@pytest.mark.parametrize("recurrence", ["linear", "one_to_one"])
@pytest.mark.parametrize("reset", ["subtract", "zero"])
@pytest.mark.parametrize("learn", [(True, True), (False, False)])
@pytest.mark.parametrize("steps", [1, 4, 30])
def test_fused_rleaky_matches_reference_loop(recurrence, reset, learn, steps):
    learn_beta, learn_recurrent = learn
    n = 16 if steps == 4 else 7          # 16 × 3 × 4 bytes: the compiled path writes in place
    ref, fused = _pair(beta=torch.rand(n) * 0.9 + 0.05, features=n, recurrence=recurrence,
                       reset=reset, learn_beta=learn_beta, learn_recurrent=learn_recurrent,
                       output="both", surrogate=FastSigmoid(), record=True)
    g = torch.Generator().manual_seed(steps)
    x = torch.randn(2 * steps, 3, n, generator=g) * 1.2 + 0.6
    grads = torch.randn(2, 2 * steps, 3, n, generator=g)
    chunks = [x[:steps], x[steps:]]          # state (membrane and spikes) crosses two calls
    s_ref, m_ref, g_ref = _run(ref, chunks, grads)
    s_fused, m_fused, g_fused = _run(fused, chunks, grads)
    assert s_ref.sum() > 0
    assert torch.equal(s_fused, s_ref)
    assert torch.equal(m_fused, m_ref)
    for a, b in zip(g_fused, g_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5 * max(b.abs().max().item(), 1e-6))


def test_rleaky_net_fused_equals_reference():
    torch.manual_seed(1)
    net = models.build("rleaky", steps=6)
    x = torch.rand(4, 1, 28, 28)
    spikes, mem = net(x)
    (spikes.sum() + mem.square().sum()).backward()
    fused = [p.grad.clone() for p in net.parameters()]
    for m in net.modules():
        if isinstance(m, RLeaky):
            m.backend = "reference"
    net.zero_grad()
    SF.reset(net)
    spikes_r, mem_r = net(x)
    (spikes_r.sum() + mem_r.square().sum()).backward()
    assert torch.equal(spikes, spikes_r) and torch.equal(mem, mem_r)
    for a, p in zip(fused, net.parameters(), strict=True):
        torch.testing.assert_close(a, p.grad, rtol=1e-5, atol=1e-5 * p.grad.abs().max().item())


def test_conv_recurrence_keeps_the_reference_loop():
    neuron = RLeaky(0.8, 3, recurrence="conv", surrogate=ATan())
    out = neuron(torch.rand(3, 2, 3, 5, 5))
    assert out.shape == (3, 2, 3, 5, 5)
    assert out.grad_fn is not None and "RLeaky" not in type(out.grad_fn).__name__


def test_bf16_autocast_training_step_runs():
    torch.manual_seed(2)
    net = models.build("rleaky", steps=4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        spikes, mem = net(torch.rand(3, 1, 28, 28))
    SF.mse_count(spikes.float(), torch.tensor([1, 2, 3])).backward()
    for p in net.parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.dtype == p.dtype
            assert torch.isfinite(p.grad).all()
