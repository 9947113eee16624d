"""Worker processes for the slow, parallel parts of data preparation.

Processes are started with ``spawn``, not ``fork``: a child forked after the parent has used
torch's OpenMP thread pool can deadlock in its first parallel region. Each worker runs torch
single-threaded, so ``workers`` processes use ``workers`` cores; more than the CPUs this process
may use (:func:`spikeforge.threads.available_cpus`) would only queue for them, so the count is
capped there (``--workers 10000`` starts no ten thousand processes).
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import Executor, ProcessPoolExecutor

from ..threads import available_cpus


def _single_thread() -> None:
    import torch

    torch.set_num_threads(1)


class LazyPool:
    """``workers`` spawned processes, started on the first :meth:`get` (so a warm cache never
    pays their start-up); ``get()`` is None when ``workers < 2``. Use as a context manager."""

    def __init__(self, workers: int | None):
        self.workers = min(workers or 0, available_cpus())
        self._executor: Executor | None = None

    def get(self) -> Executor | None:
        if self._executor is None and self.workers > 1:
            self._executor = ProcessPoolExecutor(
                self.workers, mp_context=multiprocessing.get_context("spawn"),
                initializer=_single_thread)
        return self._executor

    def __enter__(self) -> LazyPool:
        return self

    def __exit__(self, *exc) -> None:
        if self._executor is not None:
            self._executor.shutdown(cancel_futures=True)
            self._executor = None
