"""A worker's side of ``spikeforge train --nproc N`` (:func:`spikeforge.train.distributed.launch`):
how it hands its error to the launcher, which tells the user once.

The launcher sets :data:`ERROR_FILE_ENV` (a file per rank) and :data:`LAUNCHER_ENV` (its own
process id) in each worker. A worker writes the one sentence of a user error there instead of
on stderr (the launcher raises the lowest rank's), says nothing on an interrupt (the launcher
does), and exits with :data:`PEER_LOST`, silently, when a collective fails because another
worker went away (that worker's status is the one to report). Imports nothing heavy: the CLI
uses it on every error.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

ERROR_FILE_ENV = "SPIKEFORGE_ERROR_FILE"
LAUNCHER_ENV = "SPIKEFORGE_LAUNCHER_PID"
#: The exit status of a worker that stopped because another worker went away.
PEER_LOST = 3
#: What gloo (closed, reset, broken connections) and NCCL (a remote process exited) say when a
#: collective's peer process is gone.
_PEER_GONE = ("Connection closed by peer", "Connection reset by peer", "Broken pipe",
              "remote process exited", "Socket closed")


def launched() -> bool:
    """Whether this process is a worker that ``spikeforge train --nproc`` started (it sets both
    variables; one alone is a stray setting, ignored)."""
    return bool(os.environ.get(LAUNCHER_ENV) and os.environ.get(ERROR_FILE_ENV))


def report(message: str) -> bool:
    """Hand ``message`` (an error sentence) to the launcher; False outside such a worker (print
    it yourself)."""
    if not launched():
        return False
    with contextlib.suppress(OSError):
        Path(os.environ[ERROR_FILE_ENV]).write_text(message)
    return True


def is_peer_lost(err: BaseException) -> bool:
    """Whether ``err`` is a DDP collective failing because another process of the run went away
    (only in a process with ``WORLD_SIZE`` > 1)."""
    return (isinstance(err, RuntimeError) and os.environ.get("WORLD_SIZE", "1") not in ("", "1")
            and any(words in str(err) for words in _PEER_GONE))
