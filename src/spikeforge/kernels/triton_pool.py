"""IF/LIF followed by 2×2 max pooling as Triton kernels: :mod:`.neuron_pool` on a GPU.

One program owns a block of 2×2 windows and runs the neuron's whole time loop for the window's
four neurons, held as a ``[BLOCK, 4]`` tile (column k = neuron (k // 2, k % 2) of the window), so
each step's spikes are pooled in registers: the full-resolution spikes and membranes never reach
memory. Windows cover ⌈H/2⌉×⌈W/2⌉ so that the last row or column of an odd plane, which the
floor-mode pool drops, still runs its neurons (they carry the final membrane); only whole
windows write a pooled spike. Forward keeps the pre-reset H and the first maximum's index per
window (as torch's max pool picks it); backward routes each pooled gradient to that winner and
runs the neuron's backward step (:func:`.triton_math.if_lif_backward_step`) per neuron.
Arguments and outputs are those of the CPU launchers in :mod:`.neuron_pool`.
"""

from __future__ import annotations

import triton
import triton.language as tl
from torch import Tensor

from .fused import mode, surrogate_args
from .triton_math import IEEE, check_int32_indexing, if_lif_backward_step, if_lif_forward_step

#: Windows per program (four neurons each).
BLOCK = 256


@triton.jit
def _neurons(q, Q, H, W, CH, CW, BLOCK: tl.constexpr):
    """For windows ``q`` [BLOCK]: (flat neuron index within one step [BLOCK, 4], its mask,
    the pooled output index [BLOCK], its mask)."""
    k = tl.arange(0, 4)
    dy, dx = k // 2, k % 2
    p = q // (CH * CW)
    r = q % (CH * CW)
    wy, wx = r // CW, r % CW
    y = 2 * wy[:, None] + dy[None, :]
    x = 2 * wx[:, None] + dx[None, :]
    n = (p[:, None] * H + y) * W + x
    n_mask = (q < Q)[:, None] & (y < H) & (x < W)
    ph, pw = H // 2, W // 2
    o = (p * ph + wy) * pw + wx
    o_mask = (q < Q) & (wy < ph) & (wx < pw)
    return n, n_mask, o, o_mask


@triton.jit
def _lif_pool_fwd(x_ptr, x_st, v0_ptr, out_ptr, arg_ptr, h_ptr, vlast_ptr, T, P, H, W, tau,
                  v_th, v_reset, MODE: tl.constexpr, SOFT: tl.constexpr, KEEP: tl.constexpr,
                  BLOCK: tl.constexpr):
    CH, CW = (H + 1) // 2, (W + 1) // 2
    Q = P * CH * CW
    q = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    n, n_mask, o, o_mask = _neurons(q, Q, H, W, CH, CW, BLOCK)
    k = tl.arange(0, 4)[None, :]
    nn = P * H * W
    no = P * (H // 2) * (W // 2)
    v = tl.load(v0_ptr + n, mask=n_mask, other=0.0)
    for t in range(T):
        x = tl.load(x_ptr + t * x_st + n, mask=n_mask, other=0.0).to(tl.float32)
        h, s, v = if_lif_forward_step(v, x, tau, v_th, v_reset, MODE, SOFT)
        s = tl.where(n_mask, s, 0.0)
        m = tl.max(s, axis=1)
        tl.store(out_ptr + t * no + o, m, mask=o_mask)
        if KEEP:
            first = tl.min(tl.where(s == m[:, None], k, 4), axis=1)
            tl.store(arg_ptr + t * no + o, first.to(tl.uint8), mask=o_mask)
            tl.store(h_ptr + t * nn + n, h, mask=n_mask)
    tl.store(vlast_ptr + n, v, mask=n_mask)


@triton.jit
def _lif_pool_bwd(h_ptr, arg_ptr, g_ptr, gv_ptr, gx_ptr, gv0_ptr, T, P, H, W, tau, v_th,
                  v_reset, c1, c2, MODE: tl.constexpr, SOFT: tl.constexpr, DETACH: tl.constexpr,
                  SG: tl.constexpr, SUM_T: tl.constexpr, HAS_GV: tl.constexpr,
                  BLOCK: tl.constexpr):
    CH, CW = (H + 1) // 2, (W + 1) // 2
    Q = P * CH * CW
    q = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    n, n_mask, o, o_mask = _neurons(q, Q, H, W, CH, CW, BLOCK)
    k = tl.arange(0, 4)[None, :]
    nn = P * H * W
    no = P * (H // 2) * (W // 2)
    if HAS_GV:
        carry = tl.load(gv_ptr + n, mask=n_mask, other=0.0)
    else:
        carry = tl.zeros([BLOCK, 4], dtype=tl.float32)
    acc = tl.zeros([BLOCK, 4], dtype=tl.float32)
    for i in range(T):
        t = T - 1 - i
        g = tl.load(g_ptr + t * no + o, mask=o_mask, other=0.0)
        a = tl.load(arg_ptr + t * no + o, mask=o_mask, other=0).to(tl.int32)
        g_s = tl.where(k == a[:, None], g[:, None], 0.0)
        h = tl.load(h_ptr + t * nn + n, mask=n_mask, other=0.0)
        gx, carry = if_lif_backward_step(h, g_s, carry, tau, v_th, v_reset, c1, c2, MODE, SOFT,
                                         DETACH, SG)
        if SUM_T:
            acc += gx
        else:
            tl.store(gx_ptr + t * nn + n, gx, mask=n_mask)
    if SUM_T:
        tl.store(gx_ptr + n, acc, mask=n_mask)
    tl.store(gv0_ptr + n, carry, mask=n_mask)


def _grid(p: int, h: int, w: int) -> tuple[int]:
    return (triton.cdiv(p * ((h + 1) // 2) * ((w + 1) // 2), BLOCK),)


def forward(x: Tensor, x_stride: int, v0: Tensor, out: Tensor, arg: Tensor | None,
            hs: Tensor | None, v_last: Tensor, steps: int, p: int, h: int, w: int,
            tau: float | None, decay_input: bool, v_threshold: float,
            v_reset: float | None) -> None:
    """Fill ``out`` [T, P, H/2, W/2], ``arg`` and ``hs`` (when given) and ``v_last`` [P, H, W]."""
    check_int32_indexing(steps * p * h * w)
    keep = hs is not None
    _lif_pool_fwd[_grid(p, h, w)](
        x, x_stride, v0, out, arg if keep else out, hs if keep else out, v_last, steps, p, h, w,
        float(tau or 1.0), float(v_threshold), float(v_reset or 0.0),
        MODE=mode(tau, decay_input), SOFT=v_reset is None, KEEP=keep, BLOCK=BLOCK, **IEEE)


def backward(hs: Tensor, arg: Tensor, g_out: Tensor, g_v: Tensor | None, gx: Tensor,
             static: bool, gv0: Tensor, steps: int, p: int, h: int, w: int, tau: float | None,
             decay_input: bool, v_threshold: float, v_reset: float | None, detach_reset: bool,
             surrogate) -> None:
    """Fill ``gx`` ([T, P, H, W], or [P, H, W] summed over T when ``static``) and ``gv0``."""
    kind, c1, c2 = surrogate_args(surrogate)
    _lif_pool_bwd[_grid(p, h, w)](
        hs, arg, g_out, gx if g_v is None else g_v, gx, gv0, steps, p, h, w, float(tau or 1.0),
        float(v_threshold), float(v_reset or 0.0), c1, c2, MODE=mode(tau, decay_input),
        SOFT=v_reset is None, DETACH=bool(detach_reset), SG=kind, SUM_T=static,
        HAS_GV=g_v is not None, BLOCK=BLOCK, **IEEE)

