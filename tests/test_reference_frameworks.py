"""Spike-for-spike agreement with SpikingJelly and snnTorch themselves (skipped when absent).

Install them beside the CPU torch: ``pip install snntorch`` and
``pip install --no-deps spikingjelly loguru`` (spikingjelly's own requirements would replace torch).
"""

import pytest
import torch

from spikeforge import functional as SF
from spikeforge.neuron import IF, LIF, Leaky, RLeaky


def _inputs(shape, seed, scale=2.0, requires_grad=True):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g) * scale + 0.5).requires_grad_(requires_grad)


@pytest.fixture(scope="module")
def sj():
    pytest.importorskip("loguru")
    return pytest.importorskip("spikingjelly.activation_based.neuron")


@pytest.fixture(scope="module")
def snn():
    return pytest.importorskip("snntorch")


def _sj_surrogate():
    from spikingjelly.activation_based import surrogate
    return surrogate.ATan()


@pytest.mark.parametrize("kind, kwargs", [
    ("if", {}), ("if", {"v_reset": None}), ("if", {"detach_reset": True}),
    ("lif", {}), ("lif", {"tau": 3.0, "v_reset": None}), ("lif", {"decay_input": False}),
    ("lif", {"v_reset": -0.5, "detach_reset": True}),
])
def test_if_lif_match_spikingjelly(sj, kind, kwargs):
    x = _inputs((50, 8, 33), seed=len(str(kwargs)))
    if kind == "if":
        theirs = sj.IFNode(surrogate_function=_sj_surrogate(), step_mode="m", store_v_seq=True,
                           **kwargs)
        ours = IF(record=True, **kwargs)
    else:
        sj_kwargs = dict(kwargs)
        theirs = sj.LIFNode(surrogate_function=_sj_surrogate(), step_mode="m", store_v_seq=True,
                            **sj_kwargs)
        ours = LIF(record=True, **kwargs)
    s_theirs = theirs(x)
    (g_theirs,) = torch.autograd.grad((s_theirs * torch.arange(33.0)).sum(), x)
    s_ours = ours(x)
    (g_ours,) = torch.autograd.grad((s_ours * torch.arange(33.0)).sum(), x)
    assert torch.equal(s_ours, s_theirs)
    assert torch.equal(ours.v_seq, theirs.v_seq.detach())
    torch.testing.assert_close(g_ours, g_theirs, rtol=1e-5, atol=1e-6)
    assert s_ours.sum() > 0


@pytest.mark.parametrize("reset", ["subtract", "zero"])
def test_leaky_matches_snntorch(snn, reset, beta=0.5):
    x = _inputs((40, 4, 17), seed=3)
    theirs = snn.Leaky(beta=beta, reset_mechanism=reset)
    mem = theirs.reset_mem()
    s_list, m_list = [], []
    for xt in x:
        s, mem = theirs(xt, mem)
        s_list.append(s)
        m_list.append(mem)
    s_theirs, m_theirs = torch.stack(s_list), torch.stack(m_list)
    (g_theirs,) = torch.autograd.grad(s_theirs.sum() + m_theirs.sum(), x)
    s_ours, m_ours = Leaky(beta, reset=reset, output="both")(x)
    (g_ours,) = torch.autograd.grad(s_ours.sum() + m_ours.sum(), x)
    assert torch.equal(s_ours, s_theirs)
    assert torch.equal(m_ours, m_theirs)
    torch.testing.assert_close(g_ours, g_theirs, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("reset", ["subtract", "zero"])
def test_leaky_matches_snntorch_on_bfloat16_inputs(snn, reset, beta=0.9):
    # snnTorch's float32 β promotes a bf16 membrane to float32; the compiled loop runs bf16 in
    # float32 too, and must decay with 0.9, not bf16's 0.8984 (max |ΔU| was 0.99)
    x = _inputs((40, 4, 17), seed=5, requires_grad=False).bfloat16()
    theirs = snn.Leaky(beta=beta, reset_mechanism=reset)
    mem = theirs.reset_mem()
    s_list, m_list = [], []
    for xt in x:
        s, mem = theirs(xt, mem)
        s_list.append(s)
        m_list.append(mem)
    s_theirs, m_theirs = torch.stack(s_list), torch.stack(m_list)
    s_ours, m_ours = Leaky(beta, reset=reset, output="both", backend="cpu")(x)
    assert m_theirs.dtype == torch.float32 and m_ours.dtype == torch.bfloat16
    assert torch.equal(s_ours.float(), s_theirs)
    assert torch.equal(m_ours, m_theirs.bfloat16())
    assert 0 < s_theirs.mean() < 0.9


@pytest.mark.parametrize("recurrence", ["linear", "one_to_one", "conv"])
@pytest.mark.parametrize("reset", ["subtract", "zero"])
def test_rleaky_matches_snntorch(snn, recurrence, reset):
    torch.manual_seed(0)
    if recurrence == "conv":
        x = _inputs((12, 2, 3, 6, 6), seed=5)
        theirs = snn.RLeaky(beta=0.9, conv2d_channels=3, kernel_size=3, all_to_all=True,
                            reset_mechanism=reset)
        ours = RLeaky(0.9, 3, recurrence="conv", kernel_size=3, reset=reset, output="both")
        ours.recurrent.load_state_dict(theirs.recurrent.state_dict())
    elif recurrence == "linear":
        x = _inputs((12, 4, 7), seed=6)
        theirs = snn.RLeaky(beta=0.9, linear_features=7, reset_mechanism=reset)
        ours = RLeaky(0.9, 7, reset=reset, output="both")
        ours.recurrent.load_state_dict(theirs.recurrent.state_dict())
    else:
        x = _inputs((12, 4, 7), seed=7)
        theirs = snn.RLeaky(beta=0.9, V=0.5, all_to_all=False, reset_mechanism=reset)
        ours = RLeaky(0.9, 7, recurrence="one_to_one", reset=reset, output="both")
        with torch.no_grad():
            ours.recurrent.weight.fill_(0.5)
    spk, mem = theirs.reset_mem()
    s_list, m_list = [], []
    for xt in x:
        spk, mem = theirs(xt, spk, mem)
        s_list.append(spk)
        m_list.append(mem)
    s_theirs, m_theirs = torch.stack(s_list), torch.stack(m_list)
    s_ours, m_ours = ours(x)
    assert torch.equal(s_ours, s_theirs)
    torch.testing.assert_close(m_ours, m_theirs, rtol=0, atol=1e-6)
    assert s_ours.sum() > 0


def test_losses_match_snntorch(snn):
    from snntorch import functional as snnF

    g = torch.Generator().manual_seed(0)
    spikes = (torch.rand(25, 6, 10, generator=g) > 0.7).float()
    mem = torch.randn(25, 6, 10, generator=g)
    y = torch.randint(0, 10, (6,), generator=g)
    pairs = [
        (SF.mse_count(spikes, y, 0.8, 0.2), snnF.mse_count_loss(0.8, 0.2)(spikes, y)),
        (SF.mse_membrane(mem, y, 1.05, 0.2),
         snnF.mse_membrane_loss(on_target=1.05, off_target=0.2)(mem, y)),
        (SF.ce_rate(spikes, y), snnF.ce_rate_loss()(spikes, y)),
        (SF.ce_count(spikes, y), snnF.ce_count_loss()(spikes, y)),
    ]
    for ours, theirs in pairs:
        assert ours.item() == pytest.approx(theirs.item(), rel=1e-6)
    assert SF.accuracy(spikes, y) == pytest.approx(snnF.accuracy_rate(spikes, y))
