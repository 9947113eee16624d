"""Device functions the Triton kernels share: IEEE-rounded arithmetic and the surrogate derivative.

On a GPU, Triton divides float32 with an approximate reciprocal and may contract ``a·b + c``
into one fused multiply-add (one rounding instead of two); either changes the last bit of a
membrane, and a spike that the reference loop fires at exactly the threshold would flip. So the
kernels divide with ``div_rn`` and multiply with ``mul_rn`` (libdevice's round-to-nearest
intrinsics, which the compiler never fuses), and the membranes equal the reference loop's.

Triton's interpreter (``TRITON_INTERPRET=1``, kernels run by numpy on CPU tensors) has no
libdevice: there the helpers are numpy's ``/`` and ``*``, which are the same arithmetic, since
numpy rounds every float32 operation to nearest on its own and never contracts two into an FMA.
Which one a kernel uses is decided once, when this module is imported (as Triton decides
whether to interpret at the ``@triton.jit`` of each kernel).
"""

from __future__ import annotations

import os

import triton
import triton.language as tl

try:
    from triton.language.extra import libdevice
except ImportError:  # older Triton
    from triton.language.extra.cuda import libdevice

try:
    from triton import knobs

    _interpret = bool(knobs.runtime.interpret)
except ImportError:  # Triton before 3.4 read the variable itself
    _interpret = os.environ.get("TRITON_INTERPRET", "0") == "1"

#: Whether Triton runs kernels in its interpreter (read at import, as ``@triton.jit`` reads it).
INTERPRET = tl.constexpr(_interpret)


def interpreting() -> bool:
    """Whether this process runs Triton kernels in the interpreter (on CPU tensors)."""
    return bool(INTERPRET.value)


def check_int32_indexing(numel: int) -> None:
    """The kernels index [T, N] tensors with 32-bit offsets: raises
    :class:`~spikeforge.errors.ConfigError` past 2^31 − 1 elements (8 GiB of float32) instead
    of wrapping around."""
    if numel >= 2**31:
        from ..errors import ConfigError

        raise ConfigError(f"a neuron layer's [T, batch, ...] tensor has {numel} elements, more "
                          "than the Triton kernels index (2^31 - 1); lower --batch-size or -T.")


@triton.jit
def div_rn(a, b):
    """a / b rounded to nearest (IEEE)."""
    if INTERPRET:
        return a / b
    else:
        return libdevice.div_rn(a, b)


@triton.jit
def mul_rn(a, b):
    """a · b rounded to nearest, never fused with a following addition."""
    if INTERPRET:
        return a * b
    else:
        return libdevice.mul_rn(a, b)


@triton.jit
def surrogate_grad(x, c1, c2, SG: tl.constexpr):
    """The surrogate dΘ/dx at ``x`` for the codes of :func:`spikeforge.kernels.fused.
    surrogate_args`: ATan (α/2)/(1 + (π/2·α·x)²), Sigmoid α·σ(αx)(1 − σ(αx)), FastSigmoid
    1/(1 + k|x|)² (:mod:`spikeforge.surrogate`)."""
    if SG == 0:
        z = c2 * x
        return (1.0 / (1.0 + z * z)) * c1
    elif SG == 1:
        sg = 1.0 / (1.0 + tl.exp(-(c1 * x)))
        return c1 * sg * (1.0 - sg)
    else:
        d = 1.0 + c1 * tl.abs(x)
        return 1.0 / (d * d)


@triton.jit
def if_lif_forward_step(v, x, tau, v_th, v_reset, MODE: tl.constexpr, SOFT: tl.constexpr):
    """One IF/LIF step (DESIGN §3, operation for operation as :func:`spikeforge.kernels.
    reference.if_lif_step`): returns (H, S, V) from V[t−1] and X[t]; ``MODE`` as
    :func:`spikeforge.kernels.fused.mode`, ``SOFT`` for v_reset=None."""
    if SOFT:
        v_r = 0.0
    else:
        v_r = v_reset
    if MODE == 0:
        h = v + x
    elif MODE == 1:
        h = v + div_rn(x - (v - v_r), tau)
    else:
        h = v - div_rn(v - v_r, tau) + x
    s = tl.where(h - v_th >= 0.0, 1.0, 0.0)
    if SOFT:
        v = h - v_th * s
    else:
        v = h * (1.0 - s) + v_reset * s
    return h, s, v


@triton.jit
def if_lif_backward_step(h, g_s, g_v, tau, v_th, v_reset, c1, c2, MODE: tl.constexpr,
                         SOFT: tl.constexpr, DETACH: tl.constexpr, SG: tl.constexpr):
    """One step of the IF/LIF backward loop (DESIGN §3) from the pre-reset H[t], ∂L/∂S[t] and
    ∂L/∂V[t] (the step's own plus the carry from t + 1): returns (∂L/∂X[t], ∂L/∂V[t−1])."""
    d = h - v_th
    s = tl.where(d >= 0.0, 1.0, 0.0)
    if SOFT:
        gh = g_v
        if not DETACH:
            g_s = g_s - g_v * v_th
    else:
        gh = g_v * (1.0 - s)
        if not DETACH:
            g_s = g_s - g_v * h + g_v * v_reset
    gh = g_s * surrogate_grad(d, c1, c2, SG) + gh
    if MODE == 0:
        gx = gh
        carry = gh
    else:
        g_tau = div_rn(gh, tau)
        if MODE == 1:
            gx = g_tau
        else:
            gx = gh
        carry = gh - g_tau
    return gx, carry
