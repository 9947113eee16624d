"""What the Triton kernels share: IEEE float32 arithmetic, the surrogate derivative, an IF/LIF step.

On a GPU, Triton may contract ``a·b + c`` into one fused multiply-add (one rounding instead of
two) and divides float32 with an approximate reciprocal (``div.full.f32``); either changes the
last bit of a membrane, and a spike the reference loop fires at exactly the threshold would
flip. So every kernel is launched with ``**IEEE`` (``enable_fp_fusion=False``: each ``*``, ``+``
and ``−`` rounds on its own, as ``-ffp-contract=off`` does for the C++ kernels) and divides with
``tl.div_rn`` (``div.rn.f32``, IEEE round to nearest); the membranes then equal the reference
loop's bit for bit. libdevice's ``div_rn``/``mul_rn`` would do the first two jobs too, but they
flush subnormals to zero (``div.rn.ftz.f32``, ``mul.rn.ftz.f32`` under Triton's FTZ setting),
and Triton's interpreter has no libdevice.

Triton's interpreter (``TRITON_INTERPRET=1``, the kernels run by numpy on CPU tensors) is the
same arithmetic without any switch: numpy rounds every float32 operation to nearest on its own,
never contracts two into an FMA, keeps subnormals, and runs ``tl.div_rn`` as ``/``.
tests/test_kernels_triton_ptx.py compiles every kernel for sm_90 and checks the instructions.
"""

from __future__ import annotations

import os

import triton
import triton.language as tl

try:
    from triton import knobs

    _interpret = bool(knobs.runtime.interpret)
except ImportError:  # Triton before 3.4 read the variable itself
    _interpret = os.environ.get("TRITON_INTERPRET", "0") == "1"

#: Launch options of every float kernel: no contraction of a·b + c into one rounding.
IEEE = {"enable_fp_fusion": False}


def interpreting() -> bool:
    """Whether this process runs Triton kernels in the interpreter (on CPU tensors); read when
    this module is first imported, as ``@triton.jit`` reads it."""
    return _interpret


def check_int32_indexing(numel: int) -> None:
    """The kernels index [T, N] tensors with 32-bit offsets: raises
    :class:`~spikeforge.errors.ConfigError` past 2^31 − 1 elements (8 GiB of float32) instead
    of wrapping around."""
    if numel >= 2**31:
        from ..errors import ConfigError

        raise ConfigError(f"a neuron layer's [T, batch, ...] tensor has {numel} elements, more "
                          "than the Triton kernels index (2^31 - 1); lower --batch-size or -T.")


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
        h = v + tl.div_rn(x - (v - v_r), tau)
    else:
        h = v - tl.div_rn(v - v_r, tau) + x
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
        g_tau = tl.div_rn(gh, tau)
        if MODE == 1:
            gx = g_tau
        else:
            gx = gh
        carry = gh - g_tau
    return gx, carry
