"""What a benchmark ran on: the CPU model, the instruction sets in use, the ones it was limited
to (an AVX2 machine emulated on an AVX-512 one), shared by the benchmark scripts."""

from __future__ import annotations

import os
import platform

#: the variables that limit the instruction sets torch, oneDNN, MKL and spikeforge's kernels use
ISA_VARIABLES = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS",
                 "SPIKEFORGE_KERNEL_ARCH")


def _cpuinfo_line(*prefixes: str) -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return next((line for line in f if line.startswith(prefixes)), "")
    except OSError:
        return ""


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    line = _cpuinfo_line("model name")
    return line.split(":", 1)[1].strip() if line else platform.processor() or platform.machine()


def isa() -> str:
    """The instruction sets in use: the CPU's widest, the kernels' -march and torch's CPU
    capability (which ``ATEN_CPU_CAPABILITY`` can lower)."""
    import torch

    flags = _cpuinfo_line("flags", "Features")
    native = ("AVX-512" if " avx512f" in flags else "AVX2/FMA" if " avx2" in flags
              else "NEON" if " asimd" in flags else platform.machine())
    arch = os.environ.get("SPIKEFORGE_KERNEL_ARCH", "native")
    return (f"CPU {native}; kernels built with -march={arch}; torch CPU capability "
            f"{torch.backends.cpu.get_cpu_capability()}")


def isa_env() -> str:
    """The instruction-set variables set in this environment, as a command prefix."""
    return " ".join(f"{k}={os.environ[k]}" for k in ISA_VARIABLES if k in os.environ)
