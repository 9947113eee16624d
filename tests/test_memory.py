"""glibc keeps the memory a training step frees for the next step (spikeforge.memory)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from spikeforge import memory

#: In a fresh process: malloc and touch an 8 MiB block (a tensor of a training step), free it,
#: then malloc and touch one again; prints the page faults of the second block. glibc's default
#: maps and unmaps such a block on its own each time, so the second one faults in fresh pages.
_SECOND_BLOCK_FAULTS = """
import ctypes, ctypes.util, resource, sys
from spikeforge import memory
if sys.argv[1] == "keep":
    assert memory.keep_freed_memory()
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
size = 8 << 20
def touched():
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)
    return block
libc.free(touched())
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
block = touched()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
    proc = subprocess.run([sys.executable, "-c", _SECOND_BLOCK_FAULTS, mode],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return int(proc.stdout.split()[-1])


def _glibc() -> bool:
    proc = subprocess.run([sys.executable, "-c",
                           "from spikeforge import memory; print(memory.keep_freed_memory())"],
                          capture_output=True, text=True, timeout=60)
    return proc.stdout.strip() == "True"


@pytest.mark.skipif(not sys.platform.startswith("linux") or not _glibc(),
                    reason="mallopt is glibc's (Linux); other C libraries are left as they are")
def test_a_freed_block_is_reused_without_fresh_pages():
    page_count = (8 << 20) // 4096
    assert _faults("default") > page_count // 4     # fresh pages (fewer where huge pages map)
    assert _faults("keep") < 16


def test_never_raises_where_there_is_no_mallopt(monkeypatch):
    monkeypatch.setattr(memory.ctypes.util, "find_library", lambda name: None)
    assert memory.keep_freed_memory() is False
