"""RLeaky over a whole sequence in one autograd node, for all-to-all or one-to-one feedback.

Forward is the reference loop of :func:`spikeforge.kernels.reference.rleaky_step` with the same
operations in the same order (so spikes and membranes are bit-identical), run without building a
graph; backward is hand-written backpropagation through time:

    G[t]  = dL/dbase[t] = (gU[t] + gS_total[t]·Θ'(U[t] − thr) + β·G[t+1]) · (1 − R[t] if zero)
    gS_total[t] = gS[t] + V'(G[t+1])            (the feedback V(S[t]) enters step t + 1)
    dL/dX = G;  dL/dβ = Σ G[t]·U[t−1];  dL/dW = Σ_t G[t]ᵀ·S[t−1] in one product

where V' is ``G @ W`` (Linear) or ``G ⊙ w`` (one-to-one). The per-step graph of ~10 autograd
nodes becomes one node. On CPU float32 each step's elementwise part is one compiled call
(``rleaky_kernels.cpp``); a backward pass whose feedback is one-to-one or at most
:data:`SMALL_FEEDBACK` neurons wide runs whole in one call, its V' computed there too. Elsewhere
(GPU, other dtypes, autocast) the same loop runs as tensor operations. The product for dL/dW
adds G's rows at the spikes only (:func:`.sparse_input.weight_grad`; binary spikes at a few
percent firing). With no spikes before the sequence (``s`` None, a fresh state) the first step's
feedback is its bias alone, exactly what ``F.linear`` of zeros gives, and the GEMMs with the zero
spikes are skipped.
"""

from __future__ import annotations

import ctypes
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from ..surrogate import Surrogate
from . import build, fused, sparse_input

_P, _I, _F, _C = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float, ctypes.c_int
#: Widest all-to-all feedback whose backward pass runs whole in the compiled library (its
#: [n, n] products there cost less than a torch GEMM call per step).
SMALL_FEEDBACK = 32


def _feedback(kind: str, s: Tensor | None, weight: Tensor, bias: Tensor | None,
              like: Tensor) -> Tensor:
    """V(s) shaped like ``like``; ``s`` None stands for no spikes: the bias alone, or zeros."""
    if s is None:
        return torch.zeros_like(like) if bias is None or kind != "linear" else \
            bias.expand_as(like).to(like.dtype)
    return F.linear(s, weight, bias) if kind == "linear" else weight * s


_SIGNATURES = {
    "rleaky_step_forward": [_P, _P, _P, _P, _P, _P, _I, _F, _C],
    "rleaky_step_backward": [_P, _P, _P, _P, _P, _P, _P, _P, _I, _F, _C, _C, _F, _F],
    "rleaky_backward_sequence": [_P, _P, _P, _P, _P, _P, _C, _P, _P, _P, _P, _I, _I, _I, _F, _C,
                                 _C, _F, _F],
}


@lru_cache(maxsize=1)
def library() -> ctypes.CDLL:
    """The compiled step kernels (``rleaky_kernels.cpp``; raises :class:`build.BuildError`)."""
    return build.bind(Path(__file__).with_name("rleaky_kernels.cpp"), _SIGNATURES)


def _compiled(x_seq: Tensor, beta: Tensor, weight: Tensor, allowed: bool):
    """The compiled CPU step functions when they are ``allowed`` and apply (CPU float32, no
    autocast, the library builds here), else None."""
    if (not allowed or x_seq.device.type != "cpu" or x_seq.dtype != torch.float32
            or beta.dtype != torch.float32 or weight.dtype != torch.float32
            or torch.is_autocast_enabled("cpu")):
        return None
    return library() if build.loads(library) else None


def _c(t: Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _aligned(step: Tensor) -> bool:
    """Whether every step of a contiguous [T, ...] buffer of ``step``'s shape starts on a 64-byte
    boundary, as a fresh tensor does (BLAS rounding can depend on its input's alignment)."""
    return step.numel() * step.element_size() % 64 == 0


def _forward_compiled(lib, x_seq, u0, s0, beta_full, weight, bias, kind, threshold, reset_zero):
    """The loop with one compiled call per step, writing straight into the [T, ...] outputs."""
    shape = x_seq.shape
    steps, n = shape[0], x_seq[0].numel()
    spikes, mems = torch.empty(shape, dtype=torch.float32), torch.empty(shape, dtype=torch.float32)
    x, x_stride = (x_seq[0].contiguous(), 0) if x_seq.stride(0) == 0 else (x_seq.contiguous(), n)
    u0 = u0.expand(shape[1:]).contiguous()
    s = None if s0 is None else s0.expand(shape[1:])
    gemm = kind == "linear" and bias is not None and len(shape) == 3
    fb = torch.empty(shape[1:], dtype=torch.float32) if gemm else None
    weight_t = weight.t()
    spike_steps = spikes.unbind(0)
    u_ptr, x_ptr, b_ptr = u0.data_ptr(), x.data_ptr(), beta_full.data_ptr()
    m_ptr, s_ptr, step = mems.data_ptr(), spikes.data_ptr(), 4 * n
    thr, zero = float(threshold), int(reset_zero)
    for t in range(steps):
        # the feedback F.linear(s, W, b) is addmm(b, s, Wᵀ): the same GEMM, into one buffer
        if gemm and s is not None:
            f = torch.addmm(bias, s, weight_t, out=fb)
        else:
            f = _feedback(kind, s, weight, bias, spike_steps[0]).contiguous()
        lib.rleaky_step_forward(u_ptr, x_ptr + t * x_stride * 4, f.data_ptr(), b_ptr,
                                m_ptr + t * step, s_ptr + t * step, n, thr, zero)
        u_ptr, s = m_ptr + t * step, spike_steps[t]
    return spikes, mems


class _RLeaky(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x_seq, u0, s0, beta, weight, bias, kind, threshold, reset_zero, surrogate,
                compiled):
        lib = _compiled(x_seq, beta, weight, compiled)
        shape = x_seq.shape
        beta_full = beta.detach().expand(shape[1:]).contiguous()
        if lib is not None and _aligned(x_seq[0]):
            spikes, mems = _forward_compiled(lib, x_seq, u0, s0, beta_full, weight, bias, kind,
                                             threshold, reset_zero)
        else:
            u, s = u0.expand(shape[1:]), None if s0 is None else s0.expand(shape[1:])
            spikes, mems = [], []
            for t in range(shape[0]):
                # fresh (aligned) tensors per step, as in the reference loop
                fb = _feedback(kind, s, weight, bias, x_seq[0])
                if lib is not None:
                    u_new = torch.empty(shape[1:], dtype=torch.float32)
                    s_new = torch.empty(shape[1:], dtype=torch.float32)
                    # contiguous copies held here: the kernel reads them after data_ptr()
                    u_c, x_c, fb_c = u.contiguous(), x_seq[t].contiguous(), fb.contiguous()
                    lib.rleaky_step_forward(
                        u_c.data_ptr(), x_c.data_ptr(), fb_c.data_ptr(), beta_full.data_ptr(),
                        u_new.data_ptr(), s_new.data_ptr(), u_new.numel(), float(threshold),
                        int(reset_zero))
                    u, s = u_new, s_new
                else:
                    r = (u - threshold > 0).to(u.dtype)
                    base = beta * u + x_seq[t] + fb
                    u = base - r * base if reset_zero else base - r * threshold
                    s = (u - threshold > 0).to(u.dtype)
                mems.append(u)
                spikes.append(s)
            spikes, mems = torch.stack(spikes), torch.stack(mems)
        ctx.save_for_backward(spikes, mems, u0, s0, beta, beta_full, weight)
        ctx.args = (kind, threshold, reset_zero, surrogate, bias is not None, lib)
        ctx.set_materialize_grads(False)
        return spikes, mems

    @staticmethod
    def backward(ctx, g_spikes, g_mems):
        spikes, mems, u0, s0, beta, beta_full, param = ctx.saved_tensors
        kind, threshold, reset_zero, surrogate, has_bias, lib = ctx.args
        weight = param.to(mems.dtype)  # under autocast the loop may run in a narrower dtype
        steps = mems.shape[0]
        grads = torch.empty_like(mems)
        carry = torch.zeros_like(mems[0])
        g_beta = torch.zeros_like(mems[0])
        u0_full = u0.expand_as(mems[0]).contiguous()
        if lib is None:
            step = _backward_torch
        elif kind == "one_to_one" or weight.shape[-1] <= SMALL_FEEDBACK:
            step = _backward_sequence
        else:
            step = _backward_compiled
        carry, g_beta = step(lib, grads, carry, g_beta, mems, u0_full, beta, beta_full, g_spikes,
                             g_mems, weight, kind, threshold, reset_zero, surrogate)
        s_first = None if s0 is None else s0.expand_as(spikes[0])
        need = ctx.needs_input_grad
        g_u0 = carry.sum_to_size(u0.shape) if need[1] else None
        g_s0 = None
        if need[2]:
            g_s0 = grads[0] @ weight if kind == "linear" else grads[0] * weight
            g_s0 = g_s0.sum_to_size(s0.shape)
        g_b = g_beta.sum_to_size(beta.shape) if need[3] else None
        n = grads.shape[-1]
        flat_g = grads.reshape(-1, n)
        g_w = g_bias = None
        if need[4]:  # Σ_t G[t]ᵀ·S[t−1], S[−1] = s0, without concatenating S[−1] to the spikes
            pairs = [(grads[1:], spikes[:-1])] if steps > 1 else []
            if s_first is not None:
                pairs.insert(0, (grads[0], s_first))
            terms = [sparse_input.weight_grad(g.reshape(-1, n), s.reshape(-1, n))
                     if kind == "linear" else (g * s).reshape(-1, n).sum(0) for g, s in pairs]
            g_w = sum(terms[1:], terms[0]) if terms else torch.zeros_like(weight)
        if has_bias and need[5]:
            g_bias = flat_g.sum(0).to(param.dtype)
        g_w = None if g_w is None else g_w.to(param.dtype)
        return grads, g_u0, g_s0, g_b, g_w, g_bias, None, None, None, None, None


def _backward_torch(lib, grads, carry, g_beta, mems, u0_full, beta, beta_full, g_spikes, g_mems,
                    weight, kind, threshold, reset_zero, surrogate) -> tuple[Tensor, Tensor]:
    """Fill ``grads`` [T, ...] with tensor operations; return the final (carry, ∂L/∂β)."""
    steps = mems.shape[0]
    for t in range(steps - 1, -1, -1):
        u_prev = mems[t - 1] if t > 0 else u0_full
        g_s = g_spikes[t] if g_spikes is not None else None
        if t + 1 < steps:
            back = grads[t + 1] @ weight if kind == "linear" else grads[t + 1] * weight
            g_s = back if g_s is None else g_s + back
        g_m = None if g_mems is None else g_mems[t]
        g_u = carry if g_m is None else g_m + carry
        if g_s is not None:
            g_u = g_u + g_s * surrogate.derivative(mems[t] - threshold)
        if reset_zero:
            g_u = g_u * (u_prev - threshold <= 0).to(g_u.dtype)
        grads[t] = g_u
        carry = beta * g_u
        g_beta += g_u * u_prev
    return carry, g_beta


def _backward_compiled(lib, grads, carry, g_beta, mems, u0_full, beta, beta_full, g_spikes,
                       g_mems, weight, kind, threshold, reset_zero, surrogate
                       ) -> tuple[Tensor, Tensor]:
    """:func:`_backward_torch` with one compiled call per step (``carry`` and ``g_beta``
    updated in place); the feedback's gradient ``G[t+1] @ W`` (or ``⊙ w``) is added to
    ``∂L/∂S[t]`` in one torch op."""
    sg = fused.surrogate_args(surrogate)
    steps, n = mems.shape[0], mems[0].numel()
    g_s_steps = None if g_spikes is None else g_spikes.contiguous().unbind(0)
    g_m = None if g_mems is None else g_mems.contiguous()  # held: the kernel reads it
    g_m_ptr = _c(g_m)
    buf = torch.empty_like(mems[0]) if steps > 1 else None
    grad_steps, step = grads.unbind(0), 4 * n
    m_ptr, g_ptr, u0_ptr = mems.data_ptr(), grads.data_ptr(), u0_full.data_ptr()
    c_ptr, gb_ptr, b_ptr = carry.data_ptr(), g_beta.data_ptr(), beta_full.data_ptr()
    thr, zero = float(threshold), int(reset_zero)
    for t in range(steps - 1, -1, -1):
        g_s = None if g_s_steps is None else g_s_steps[t]
        if t + 1 < steps:
            if kind == "linear" and g_s is not None and buf.dim() == 2:
                g_s = torch.addmm(g_s, grad_steps[t + 1], weight, out=buf)
            else:
                back = (grad_steps[t + 1] @ weight if kind == "linear"
                        else grad_steps[t + 1] * weight)
                g_s = back if g_s is None else torch.add(g_s, back, out=buf)
        lib.rleaky_step_backward(m_ptr + t * step, m_ptr + (t - 1) * step if t > 0 else u0_ptr,
                                 b_ptr, None if g_m_ptr is None else g_m_ptr + t * step,
                                 None if g_s is None else g_s.data_ptr(), c_ptr,
                                 g_ptr + t * step, gb_ptr, n, thr, zero, *sg)
    return carry, g_beta


def _backward_sequence(lib, grads, carry, g_beta, mems, u0_full, beta, beta_full, g_spikes,
                       g_mems, weight, kind, threshold, reset_zero, surrogate
                       ) -> tuple[Tensor, Tensor]:
    """:func:`_backward_torch` in one compiled call, V' included (one-to-one feedback, or
    all-to-all of at most :data:`SMALL_FEEDBACK` neurons)."""
    steps, n = mems.shape[0], mems.shape[-1]
    rows = mems[0].numel() // n
    g_s = None if g_spikes is None else g_spikes.contiguous()
    g_m = None if g_mems is None else g_mems.contiguous()
    w = weight.contiguous()
    buf = torch.empty(rows * n, dtype=torch.float32)
    lib.rleaky_backward_sequence(
        mems.data_ptr(), u0_full.data_ptr(), beta_full.data_ptr(), _c(g_m), _c(g_s), w.data_ptr(),
        int(kind == "one_to_one"), carry.data_ptr(), grads.data_ptr(), g_beta.data_ptr(),
        buf.data_ptr(), steps, rows, n, float(threshold), int(reset_zero),
        *fused.surrogate_args(surrogate))
    return carry, g_beta


def rleaky(x_seq: Tensor, u: Tensor, s: Tensor | None, beta: Tensor, weight: Tensor,
           bias: Tensor | None, kind: str, threshold: float, reset_zero: bool,
           surrogate: Surrogate, compiled: bool = True) -> tuple[Tensor, Tensor]:
    """RLeaky over ``x_seq`` [T, ..., n] from membrane ``u`` and spikes ``s`` [..., n] (None: no
    spikes yet, a fresh state), feedback ``F.linear(s, weight, bias)`` (``kind="linear"``) or
    ``weight ⊙ s`` (``"one_to_one"``): returns (S, U) each [T, ..., n]. ``compiled=False`` runs
    the tensor-operation loop (the GPU path) even where the compiled CPU steps apply."""
    if kind not in ("linear", "one_to_one"):
        raise ValueError(f"kind must be 'linear' or 'one_to_one', got {kind!r}")
    return _RLeaky.apply(x_seq, u, s, beta, weight, bias, kind, threshold, reset_zero, surrogate,
                         compiled)
