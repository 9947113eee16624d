"""One writer per run directory: ``spikeforge train`` holds an advisory lock on the folder
(``flock`` on the directory itself, so no file is added to the run) while it writes there.

A second ``train`` of the same folder (``--resume`` or ``--overwrite`` while the first still
runs, or a worker left behind) is refused before it writes anything, instead of interleaving
epochs in ``metrics.csv`` and ``last/``. The lock goes with the process, however it ends.
Where ``fcntl`` is missing (Windows) or the file system refuses locks, nothing is locked.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from ..errors import ConfigError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None


class RunLock:
    """The lock on ``run_dir``; :meth:`acquire` once the folder exists, :meth:`release` (or the
    end of a ``with`` block) when done."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self._fd: int | None = None

    def acquire(self) -> None:
        """Lock the folder (a no-op when already held here or when the folder does not exist
        yet). Raises :class:`ConfigError` when another process holds it."""
        if self._fd is not None or fcntl is None or not self.run_dir.is_dir():
            return
        try:
            fd = os.open(self.run_dir, os.O_RDONLY)
        except OSError:
            return  # unreadable: the writes that follow say what is wrong
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ConfigError(f"{self.run_dir} is being written by another spikeforge train "
                              "right now; wait for it to finish (or stop it), then try again."
                              ) from None
        except OSError:  # a file system without locks
            os.close(fd)
            return
        self._fd = fd

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()
