"""glibc keeps the memory a training step frees for the next step (spikeforge.memory)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from spikeforge import memory

#: A csnn training step at batch 64 (one thread); prints the page faults of its fourth step.
_STEP_FAULTS = """
import resource, sys, torch
from spikeforge import memory
from spikeforge.commands.bench import workload
if sys.argv[1] == "keep":
    assert memory.keep_freed_memory()
torch.set_num_threads(1)
w = workload("csnn", batch=64)
for _ in range(3):
    w.train()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
w.train()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
    proc = subprocess.run([sys.executable, "-c", _STEP_FAULTS, mode], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return int(proc.stdout.split()[-1])


def _glibc() -> bool:
    proc = subprocess.run([sys.executable, "-c",
                           "from spikeforge import memory; print(memory.keep_freed_memory())"],
                          capture_output=True, text=True, timeout=60)
    return proc.stdout.strip() == "True"


@pytest.mark.skipif(not sys.platform.startswith("linux") or not _glibc(),
                    reason="mallopt is glibc's (Linux); other C libraries are left as they are")
def test_a_training_step_reuses_the_memory_the_last_one_freed():
    default, kept = _faults("default"), _faults("keep")
    assert default > 5000          # fresh pages for the step's activations, every step
    assert kept < default / 4


def test_never_raises_where_there_is_no_mallopt(monkeypatch):
    monkeypatch.setattr(memory.ctypes.util, "find_library", lambda name: None)
    assert memory.keep_freed_memory() is False
