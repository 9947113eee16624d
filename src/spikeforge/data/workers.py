"""Worker processes for the slow, parallel parts of data preparation.

Processes are started with ``spawn``, not ``fork``: a child forked after the parent has used
torch's OpenMP thread pool can deadlock in its first parallel region. Each worker runs torch
single-threaded, so ``workers`` processes use ``workers`` cores.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from concurrent.futures import Executor, ProcessPoolExecutor
from contextlib import contextmanager


def _single_thread() -> None:
    import torch

    torch.set_num_threads(1)


@contextmanager
def process_pool(workers: int | None) -> Iterator[Executor | None]:
    """A pool of ``workers`` processes when ``workers > 1``, else None; shut down on exit."""
    if not workers or workers < 2:
        yield None
        return
    executor = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_single_thread)
    try:
        yield executor
    finally:
        executor.shutdown(cancel_futures=True)
