"""One CPU buffer that successive dense N-MNIST batches are written into.

A batch of 128 recordings at 1 ms frames is ``[~310, 128, 2, 34, 34]`` float32, about 370 MB,
with under 0.2 % of its cells non-zero. Allocating and zero-filling it afresh for every batch
costs a page fault per page; in a training process whose memory is fragmented the kernel may
also stall to compact memory for huge pages, and ``py-spy`` found 23 % of a real
``spikeforge train nmnist-csnn`` step there (AMD EPYC, Zen 5, 2 cores). Reused, the buffer is
faulted in once, and each batch zeroes only the cells the previous one wrote.
"""

from __future__ import annotations

import numpy as np


class BatchBuffer:
    """A grow-only float32 buffer; :meth:`take` returns its first ``size`` elements, all zero.

    The array :meth:`take` returns is valid until the next call: the caller must be done with
    one batch before asking for the next (as a training or evaluation loop is).
    """

    def __init__(self) -> None:
        self._buffer: np.ndarray | None = None
        self._written: np.ndarray | None = None

    def take(self, size: int) -> np.ndarray:
        """``float32 [size]`` of zeros, the buffer's first ``size`` elements."""
        if self._buffer is None or self._buffer.size < size:
            # np.empty + fill: numpy backs large arrays with huge pages (madvise), which fault in
            # about 4x faster than torch.zeros' 4 KiB pages
            self._buffer = np.empty(size, dtype=np.float32)
            self._buffer.fill(0)
        elif self._written is not None:
            self._buffer[self._written] = 0
        self._written = None
        return self._buffer[:size]

    def wrote(self, positions: np.ndarray) -> None:
        """Record the flat ``positions`` just written, to be zeroed by the next :meth:`take`."""
        self._written = positions
