"""The kernels build for AArch64 (NEON) and, run under qemu-user, compute what the x86 build does.

Every kernel source is cross-compiled with Debian's ``g++-aarch64-linux-gnu`` using the flags
of kernels/build.py. tests/kernel_checksums.cpp (the sparse Conv-MaxPool, Poisson-Linear and
channels-last IF-MaxPool kernels on fixed inputs, a hash of every output) is then built for
AArch64 and for this x86 CPU (``-march=native``, with FMA); both fuse multiply-adds, so the hashes
must be equal (an SSE2 build, which does not fuse, differs in the input gradients), and the x86
build is checked against torch in test_kernels_variants.py.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from spikeforge.kernels import build

KERNELS = Path(build.__file__).parent
DRIVER = Path(__file__).with_name("kernel_checksums.cpp")
CROSS = "aarch64-linux-gnu-g++"
SYSROOT = Path("/usr/aarch64-linux-gnu")
FLAGS = [*build.BASE_FLAGS, "-march=armv8-a", "-fopenmp"]

needs_cross = pytest.mark.skipif(
    shutil.which(CROSS) is None,
    reason=f"{CROSS} is not installed (Debian package g++-aarch64-linux-gnu)")


def _compile(cxx: str, args: list[str]) -> None:
    proc = subprocess.run([cxx, *args], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


@needs_cross
@pytest.mark.parametrize("source", sorted(p.name for p in KERNELS.glob("*.cpp")))
def test_kernel_source_cross_compiles_for_aarch64(source, tmp_path):
    out = tmp_path / "k.so"
    _compile(CROSS, [*FLAGS, str(KERNELS / source), "-o", str(out)])
    assert out.read_bytes()[:4] == b"\x7fELF"


def _checksums(cmd: list[str]) -> list[str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.splitlines()


@needs_cross
@pytest.mark.skipif(shutil.which("qemu-aarch64") is None,
                    reason="qemu-aarch64 is not installed (Debian package qemu-user)")
@pytest.mark.skipif(build.platform.machine() != "x86_64" or "fma" not in build._cpu_signature(),
                    reason="the reference build needs an x86-64 CPU with FMA")
def test_aarch64_build_computes_what_the_x86_build_does(tmp_path):
    sources = [str(DRIVER), str(KERNELS / "sparse_kernels.cpp"),
               str(KERNELS / "poisson_kernels.cpp"), str(KERNELS / "neuron_pool_kernels.cpp")]
    common = ["-O3", "-ffp-contract=off", "-fno-fast-math", "-fopenmp", "-Wno-psabi"]
    _compile(CROSS, [*common, "-march=armv8-a", *sources, "-o", str(tmp_path / "arm")])
    _compile(build._compiler(), [*common, "-march=native", *sources, "-o", str(tmp_path / "x86")])
    arm = _checksums(["qemu-aarch64", "-L", str(SYSROOT), str(tmp_path / "arm")])
    x86 = _checksums([str(tmp_path / "x86")])
    assert len(x86) == 22 and len({line.split()[-1] for line in x86}) == 22
    assert arm == x86
