"""Every fused backend against the reference loop: identical spikes, gradients within 1e-5."""

import warnings

import pytest
import torch

from spikeforge import kernels
from spikeforge.kernels import build, reference
from spikeforge.neuron import IF, LIF, Leaky
from spikeforge.surrogate import ATan, FastSigmoid, Sigmoid


def _fused():
    """The compiled CPU backend (the Triton backend's cases are in test_kernels_triton.py)."""
    try:
        return [pytest.param((kernels.get_backend("cpu"), "cpu"), id="cpu")]
    except kernels.BackendUnavailable as err:
        return [pytest.param(None, id="cpu", marks=pytest.mark.skip(reason=str(err)))]


FUSED = _fused()
SHAPES = [(1, 3, 7), (4, 2, 5, 6), (100, 2, 9), (4, 2, 3, 10, 10)]


def assert_grad_close(ref, got):
    """|got − ref| ≤ 1e-5·|ref| + 1e-5·max|ref| (relative, with a floor at the tensor's scale)."""
    scale = ref.abs().max().item()
    torch.testing.assert_close(got.cpu(), ref.cpu(), rtol=1e-5, atol=1e-5 * max(scale, 1e-6))


def run_with_grads(fn, device, inputs, grads):
    """``fn(*inputs)`` on ``device``: (outputs, ∂(Σ outputs·grads)/∂inputs), both on the CPU."""
    leaves = [t.detach().to(device).requires_grad_() for t in inputs]
    out = fn(*leaves)
    loss = sum((o * g.to(device)).sum() for o, g in zip(out, grads, strict=True))
    return [o.detach().cpu() for o in out], [g.cpu() for g in torch.autograd.grad(loss, leaves)]


IF_LIF_CASES = [
    # tau, decay_input, v_reset, surrogate
    (None, True, 0.0, ATan()),
    (None, True, None, Sigmoid()),
    (2.0, True, 0.0, ATan()),
    (3.0, True, -0.2, FastSigmoid()),
    (1.7, True, None, ATan(3.0)),
    (2.5, False, 0.0, Sigmoid(2.0)),
    (3.0, False, None, FastSigmoid(10.0)),
]


@pytest.mark.parametrize("backend", FUSED)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("tau, decay_input, v_reset, surrogate", IF_LIF_CASES)
@pytest.mark.parametrize("detach_reset", [False, True])
def test_if_lif_matches_reference(backend, shape, tau, decay_input, v_reset, surrogate,
                                  detach_reset):
    kernel, device = backend
    g = torch.Generator().manual_seed(hash((shape, tau, v_reset, detach_reset)) % 2**31)
    x = torch.randn(shape, generator=g) * 1.5 + 0.8
    v = torch.randn(shape[1:], generator=g) * 0.3
    grads = [torch.randn(shape, generator=g), torch.randn(shape, generator=g)]
    args = (tau, decay_input, 1.0, v_reset, surrogate, detach_reset)
    out, grad = run_with_grads(lambda *t: kernel.if_lif(*t, *args), device, [x, v], grads)
    ref_out, ref_grad = run_with_grads(lambda *t: reference.if_lif(*t, *args), "cpu", [x, v],
                                       grads)
    assert ref_out[0].sum() > 0, "the case must produce spikes"
    assert torch.equal(out[0], ref_out[0])
    assert torch.equal(out[1], ref_out[1])
    for r, o in zip(ref_grad, grad, strict=True):
        assert_grad_close(r, o)


@pytest.mark.parametrize("backend", FUSED)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("reset_zero", [False, True])
@pytest.mark.parametrize("per_neuron_beta", [False, True])
@pytest.mark.parametrize("surrogate", [ATan(), FastSigmoid()])
def test_leaky_matches_reference(backend, shape, reset_zero, per_neuron_beta, surrogate):
    kernel, device = backend
    g = torch.Generator().manual_seed(hash((shape, reset_zero, per_neuron_beta)) % 2**31)
    x = torch.randn(shape, generator=g) * 1.5 + 0.8
    u = torch.randn(shape[1:], generator=g) * 0.5
    beta = torch.rand(shape[-1:] if per_neuron_beta else (), generator=g) * 0.9 + 0.05
    grads = [torch.randn(shape, generator=g), torch.randn(shape, generator=g)]
    args = (1.0, reset_zero, surrogate)
    out, grad = run_with_grads(lambda *t: kernel.leaky(*t, *args), device, [x, u, beta], grads)
    ref_out, ref_grad = run_with_grads(lambda *t: reference.leaky(*t, *args), "cpu",
                                       [x, u, beta], grads)
    assert ref_out[0].sum() > 0
    assert torch.equal(out[0], ref_out[0])
    assert torch.equal(out[1], ref_out[1])
    for r, o in zip(ref_grad, grad, strict=True):
        assert_grad_close(r, o)


@pytest.mark.parametrize("backend", FUSED)
def test_repeated_input_view_equals_materialised_copy(backend):
    """A direct-encoded input (stride 0 over T) gives the result of its contiguous copy."""
    kernel, device = backend
    x = (torch.rand(2, 8, 8, device=device) * 2).requires_grad_()
    seq = x.unsqueeze(0).expand(5, 2, 8, 8)
    v = torch.zeros(2, 8, 8, device=device)
    s1, v1 = kernel.if_lif(seq, v, 2.0, True, 1.0, 0.0, ATan(), False)
    (g1,) = torch.autograd.grad(s1.sum() + v1.sum(), x)
    s2, v2 = kernel.if_lif(seq.contiguous(), v, 2.0, True, 1.0, 0.0, ATan(), False)
    (g2,) = torch.autograd.grad(s2.sum() + v2.sum(), x)
    assert torch.equal(s1, s2) and torch.equal(v1, v2) and torch.equal(g1, g2)
    assert 0 < s1.sum() < s1.numel()


@pytest.mark.parametrize("backend", FUSED)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_inputs(backend, dtype):
    """Narrow inputs run (computed in float32 inside) and return the input dtype."""
    kernel, device = backend
    x = (torch.randn(6, 4, 16) + 0.5).to(device=device, dtype=dtype).requires_grad_()
    u = torch.zeros(4, 16, device=device, dtype=dtype)
    beta = torch.tensor(0.75, device=device, dtype=dtype)
    s, m = kernel.leaky(x, u, beta, 1.0, False, ATan())
    s_ref, m_ref = reference.leaky(x.detach().float().cpu(), u.float().cpu(), beta.float().cpu(),
                                   1.0, False, ATan())
    assert s.dtype == dtype and m.dtype == dtype
    assert torch.equal(s.float().cpu(), s_ref)
    (gx,) = torch.autograd.grad(m.float().sum(), x)
    assert gx.dtype == dtype and torch.isfinite(gx.float()).all()
    s, v = kernel.if_lif(x, u, 2.0, True, 1.0, 0.0, ATan(), False)
    assert s.dtype == dtype and v.dtype == dtype


@pytest.mark.parametrize("backend", FUSED)
def test_eval_mode_needs_no_graph(backend):
    kernel, device = backend
    x = torch.randn(4, 3, 5, device=device)
    with torch.no_grad():
        s, v = kernel.if_lif(x, torch.zeros(3, 5, device=device), None, True, 1.0, 0.0, ATan(),
                             False)
    s_ref, v_ref = reference.if_lif(x.cpu(), torch.zeros(3, 5), None, True, 1.0, 0.0, ATan(),
                                    False)
    assert not s.requires_grad and torch.equal(s.cpu(), s_ref) and torch.equal(v.cpu(), v_ref)


@pytest.mark.parametrize("backend", FUSED)
def test_neurons_fused_equal_reference_over_two_calls(backend):
    """State carried between calls (v of the last step) flows through the fused kernels too."""
    _, device = backend
    name = "cpu" if device == "cpu" else "triton"
    torch.manual_seed(0)
    x = (torch.randn(2, 7, 3, 11) + 0.4).to(device)
    for make in (lambda b: LIF(tau=2.0, backend=b), lambda b: IF(v_reset=None, backend=b),
                 lambda b: Leaky(0.8, learn_beta=True, backend=b)):
        ref, fused = make("reference").to(device), make(name).to(device)
        outs = []
        for neuron in (ref, fused):
            xi = x.clone().requires_grad_()
            y = torch.cat([neuron(xi[0]), neuron(xi[1])])
            y.sum().backward()
            outs.append((y.detach(), xi.grad, [p.grad for p in neuron.parameters()]))
        assert torch.equal(outs[0][0], outs[1][0])
        assert_grad_close(outs[0][1], outs[1][1])
        for p_ref, p_fused in zip(outs[0][2], outs[1][2], strict=True):
            assert_grad_close(p_ref, p_fused)


def test_auto_picks_the_cpu_kernels_when_they_build():
    if not any(p.values[0] is not None and p.values[0][1] == "cpu" for p in FUSED):
        pytest.skip("no C++ compiler here")
    assert kernels.get_backend("auto", "cpu").__name__ == "spikeforge.kernels.cpu"
    assert kernels.get_backend("reference", "cpu") is reference


def test_auto_falls_back_to_reference_with_a_warning(monkeypatch):
    kernels._load.cache_clear()
    kernels._auto.cache_clear()
    monkeypatch.setattr(kernels, "_MODULES", {"cpu": ".missing_backend", "triton": ".x"})
    try:
        with pytest.warns(UserWarning, match="reference loop"):
            assert kernels.get_backend("auto", "cpu") is reference
        with pytest.raises(kernels.BackendUnavailable):
            kernels.get_backend("cpu")
    finally:
        kernels._load.cache_clear()
        kernels._auto.cache_clear()


def test_triton_backend_is_lazy_and_refuses_cleanly_without_gpu(monkeypatch):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert kernels.get_backend("reference", "cuda") is reference
    triton_gpu = pytest.importorskip("spikeforge.kernels.triton_gpu")
    monkeypatch.setattr(triton_gpu, "interpreting", lambda: False)  # as outside the tests
    kernels._load.cache_clear()
    try:
        with pytest.raises(kernels.BackendUnavailable, match="triton"):
            kernels.get_backend("triton", "cuda")
    finally:
        kernels._load.cache_clear()


def test_build_without_a_compiler_is_a_build_error(monkeypatch, tmp_path):
    monkeypatch.setenv("SPIKEFORGE_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("CXX", raising=False)
    src = tmp_path / "k.cpp"
    src.write_text("extern \"C\" int f() { return 1; }\n")
    with pytest.raises(build.BuildError, match="compiler"):
        build.load(src)


def test_build_caches_the_library(monkeypatch, tmp_path):
    if build.shutil.which("c++") is None and build.shutil.which("g++") is None:
        pytest.skip("no C++ compiler here")
    monkeypatch.setenv("SPIKEFORGE_CACHE_DIR", str(tmp_path))
    src = tmp_path / "k.cpp"
    src.write_text("extern \"C\" int answer() { return 42; }\n")
    assert build.load(src).answer() == 42
    (lib,) = tmp_path.glob("k-*.so")
    stamp = lib.stat().st_mtime_ns
    assert build.load(src).answer() == 42
    assert lib.stat().st_mtime_ns == stamp
