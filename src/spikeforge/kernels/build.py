"""Compile a kernel source file once per machine and load it with ctypes.

The shared library is keyed by a hash of the source (with the local headers it includes), the
compiler, its flags and the CPU, and
cached in ``$SPIKEFORGE_CACHE_DIR`` (default ``$XDG_CACHE_HOME/spikeforge`` or
``~/.cache/spikeforge``). A cold build of ``cpu_kernels.cpp`` is one ``g++`` call of about a
second (no PyTorch headers are compiled); a warm start only loads the file. The library is
written under a temporary name and renamed, so concurrent processes never load half a file.
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

FLAGS = ("-O3", "-march=native", "-ffp-contract=off", "-fno-fast-math", "-fPIC", "-shared",
         "-fopenmp")


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


def load(source: Path) -> ctypes.CDLL:
    """The compiled ``source`` as a ctypes library, building it on first use on this machine."""
    cxx = _compiler()
    text = source.read_bytes()
    text += b"".join((source.parent / name.decode()).read_bytes()
                     for name in re.findall(rb'^#include "([^"]+)"', text, re.M))
    attempts = [FLAGS, tuple(f for f in FLAGS if f not in ("-march=native", "-fopenmp"))]
    errors = []
    for flags in attempts:
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


def bind(source: Path, signatures: dict[str, list]) -> ctypes.CDLL:
    """:func:`load` ``source`` and declare each function of ``signatures`` (name → ctypes
    argument types; every kernel returns void)."""
    lib = load(source)
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
