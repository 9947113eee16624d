"""Compile every Triton kernel for an sm_90 GPU (H100/H200) without one, and count instructions.

Run as ``python tests/triton_ptx.py`` with ``TRITON_INTERPRET`` unset (the kernels must be real
``JITFunction``s). Each launcher of the triton backend is called on small CPU tensors with a
kernel launch replaced by ``triton.compile`` for the target: the constexpr variants the calls
select are built to PTX by Triton's own compiler and ptxas, as on a GPU, but nothing runs (the
outputs stay unwritten). Prints one JSON list: per compiled variant, the kernel's name, its
constexprs, its launch options and the count of each float32 instruction of interest in its PTX.
"""

from __future__ import annotations

import json
import re
import sys

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from triton.runtime.jit import JITFunction

TARGET = GPUTarget("cuda", 90, 32)
TYPES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16",
         torch.uint8: "u8", torch.int32: "i32", torch.int64: "i64"}
#: PTX float32 instructions whose presence decides whether a kernel rounds like the reference.
OPS = ("fma.rn.f32", "div.rn.f32", "div.full.f32", "div.approx", "mul.rn.f32", "add.rn.f32",
       "sub.rn.f32", ".ftz.f32")


def _arg_type(value) -> str:
    if isinstance(value, torch.Tensor):
        return "*" + TYPES[value.dtype]
    if isinstance(value, bool):
        return "i1"
    if isinstance(value, int):
        return "i32" if -2**31 <= value < 2**31 else "i64"
    return "fp32"


compiled: list[dict] = []


def _compile_instead(self, *args, grid, warmup, **kwargs):
    options = {k: kwargs.pop(k) for k in ("enable_fp_fusion",) if k in kwargs}
    names = self.arg_names
    values = dict(zip(names, args, strict=False))
    constexprs = {n: kwargs[n] for n in names if n in kwargs}
    signature = {n: "constexpr" if n in constexprs else _arg_type(values[n]) for n in names}
    record = {"kernel": self.fn.__name__, "constexprs": constexprs, "options": options}
    if record not in [{k: c[k] for k in record} for c in compiled]:
        kernel = triton.compile(ASTSource(self, signature, constexprs), target=TARGET,
                                options=options)
        ptx = kernel.asm["ptx"]
        record["ops"] = {op: len(re.findall(re.escape(op), ptx)) for op in OPS}
        compiled.append(record)


def main() -> int:
    from spikeforge.kernels import triton_gpu, triton_poisson
    from spikeforge.kernels.neuron_pool import lif_pool
    from spikeforge.neuron import IF, LIF
    from spikeforge.surrogate import ATan, FastSigmoid, Sigmoid

    JITFunction.run = _compile_instead
    triton_gpu.available = lambda: True  # no GPU here: nothing is launched
    x = torch.rand(3, 2, 4, 4, requires_grad=True)
    v = torch.zeros(2, 4, 4)
    for tau, decay, v_reset, sg, detach in [(None, True, 0.0, ATan(), False),
                                            (2.0, True, 0.0, Sigmoid(), True),
                                            (3.0, False, None, FastSigmoid(), False)]:
        s, m = triton_gpu.if_lif(x, v, tau, decay, 1.0, v_reset, sg, detach)
        (s.sum() + m.sum()).backward()
    for zero in (False, True):
        s, m = triton_gpu.leaky(x, v, torch.tensor(0.5, requires_grad=True), 1.0, zero, ATan())
        (s.sum() + m.sum()).backward()
    pool = torch.nn.MaxPool2d(2)
    planes = torch.rand(3, 2, 1, 4, 4, requires_grad=True)  # [T, B, C, H, W]
    lif_pool(LIF(tau=2.0, backend="triton"), pool, planes).sum().backward()
    lif_pool(IF(v_reset=None, backend="triton"), pool, planes[0], steps=3).sum().backward()
    triton_poisson.encode(torch.rand(2, 30), 3, 12345, torch.float32)
    print(json.dumps(compiled))
    return 0


if __name__ == "__main__":
    sys.exit(main())
