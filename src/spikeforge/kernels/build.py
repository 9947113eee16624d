"""Compile a kernel source file once per machine and load it with ctypes.

The shared library is keyed by a hash of the source (with the local headers it includes), the
compiler, its flags and the CPU, and cached in ``$SPIKEFORGE_CACHE_DIR`` (default
``$XDG_CACHE_HOME/spikeforge`` or ``~/.cache/spikeforge``). A cold build of ``cpu_kernels.cpp``
is one ``g++`` call of about a second (no PyTorch headers are compiled); a warm start only loads
the file. The library is written under a temporary name and renamed, so concurrent processes
never load half a file.

The sources are portable C++ (GCC/Clang vector extensions, simd16.h): ``-march`` picks the
instruction set. It is ``native`` unless ``$SPIKEFORGE_KERNEL_ARCH`` names another ``-march``
value (``x86-64-v3`` for AVX2/FMA, ``x86-64`` for SSE2 only, ``armv8-a``…), which tests and
benchmarks use to run the kernels a CPU without AVX-512 would get. Each build tries, in order:
those flags with ``-fopenmp``; without it (a compiler without OpenMP, such as Apple clang: the
kernels run single-threaded); and, for ``native`` only, without ``-march`` (a compiler that
does not know the CPU).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from ..errors import ConfigError

#: Flags of every build; ``-ffp-contract=off`` keeps ``a * b + c`` unfused on every ISA (the
#: kernels fuse explicitly where they mean to), ``-fno-fast-math`` keeps IEEE semantics, and
#: ``-fno-trapping-math`` (floating-point traps are never enabled here; results are unchanged)
#: lets GCC if-convert loops without masked stores: without it the IF-MaxPool neuron loop ran
#: scalar on AVX2 (a comparison "could trap") and vectorised only with AVX-512's masks.
BASE_FLAGS = ("-O3", "-ffp-contract=off", "-fno-fast-math", "-fno-trapping-math", "-fPIC",
              "-shared")
#: The environment variable that selects the ``-march`` value.
ARCH_ENV = "SPIKEFORGE_KERNEL_ARCH"
_ARCH_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")


class BuildError(RuntimeError):
    """The kernel library could not be compiled or loaded."""


def cache_dir() -> Path:
    """Where compiled kernels are kept (created on demand)."""
    env = os.environ.get("SPIKEFORGE_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "spikeforge"


def _compiler() -> str:
    for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if name and shutil.which(name):
            return name
    raise BuildError("no C++ compiler found (set CXX, or install g++)")


def arch() -> str:
    """The ``-march`` value kernels are built for: ``$SPIKEFORGE_KERNEL_ARCH`` or ``native``.

    Raises:
        ConfigError: the variable is set to something that is not a ``-march`` value.
    """
    value = os.environ.get(ARCH_ENV, "").strip() or "native"
    if not _ARCH_RE.fullmatch(value):
        raise ConfigError(f"{ARCH_ENV}={value!r} is not a -march value; set it to one such as "
                          "native, x86-64-v3 or x86-64, or unset it.")
    return value


def flag_sets(march: str, openmp: bool = True) -> list[tuple[str, ...]]:
    """The compiler flags :func:`load` tries in turn for ``-march=march`` (see the module
    docstring); ``openmp`` False leaves out the ``-fopenmp`` attempt."""
    sets = [(*BASE_FLAGS, f"-march={march}", "-fopenmp"), (*BASE_FLAGS, f"-march={march}")]
    if march == "native":
        sets.append(BASE_FLAGS)
    return sets if openmp else sets[1:]


def _cpu_signature() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return line
    except OSError:
        pass
    return platform.processor() + platform.machine()


def _compile(cxx: str, source: Path, out: Path, flags: tuple[str, ...]) -> None:
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    cmd = [cxx, *flags, str(source), "-o", str(tmp)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise BuildError(f"{' '.join(cmd)} failed: {err}") from err
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise BuildError(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    os.replace(tmp, out)


def load(source: Path, march: str | None = None, openmp: bool = True) -> ctypes.CDLL:
    """The compiled ``source`` as a ctypes library, building it on first use on this machine.

    ``march`` (default :func:`arch`) is the ``-march`` value; ``openmp`` False builds without
    OpenMP, as a compiler that lacks it would. Raises :class:`BuildError` when no flag set of
    :func:`flag_sets` compiles and loads.
    """
    cxx = _compiler()
    text = source.read_bytes()
    text += b"".join((source.parent / name.decode()).read_bytes()
                     for name in re.findall(rb'^#include "([^"]+)"', text, re.M))
    errors = []
    for flags in flag_sets(march or arch(), openmp):
        key = hashlib.sha256(
            b"\0".join([text, cxx.encode(), " ".join(flags).encode(), _cpu_signature().encode()])
        ).hexdigest()[:16]
        for folder in (cache_dir(), Path(tempfile.gettempdir()) / "spikeforge"):
            lib = folder / f"{source.stem}-{key}.so"
            try:
                if not lib.exists():
                    folder.mkdir(parents=True, exist_ok=True)
                    _compile(cxx, source, lib, flags)
                return ctypes.CDLL(str(lib))
            except (OSError, BuildError) as err:
                errors.append(str(err))
    raise BuildError("; ".join(errors))


def bind(source: Path, signatures: dict[str, list], march: str | None = None,
         openmp: bool = True) -> ctypes.CDLL:
    """:func:`load` ``source`` (``march``, ``openmp`` as there) and declare each function of
    ``signatures`` (name → ctypes argument types; every kernel returns void)."""
    lib = load(source, march, openmp)
    for name, argtypes in signatures.items():
        fn = getattr(lib, name)
        fn.argtypes = argtypes
        fn.restype = None
    return lib


def loads(library) -> bool:
    """Whether calling ``library`` (a cached loader such as ``cpu.library``) succeeds here."""
    try:
        library()
    except BuildError:
        return False
    return True
