"""Writing files so that a failure names the path and leaves nothing half-written.

Every file spikeforge writes (run configs, metrics, checkpoints, figures, exports, dataset
files) goes through :func:`atomic_write` (bytes) or :func:`replacing` (a file another library
writes): the file is written under a temporary name beside the target (flushed to disk) and
renamed over the target, so a reader sees the old file or the new one, never a part. When
anything fails (read-only folder, permission denied, disk full) the temporary file is removed
and a :class:`WriteError` says, in one sentence, which path could not be written, why, and what
to do. :func:`writing` gives the
same message for writes made by other libraries (TensorBoard, folder creation).
"""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import re
from collections.abc import Iterator
from pathlib import Path

from .errors import WriteError

#: errno → what the user can do about it
_FIXES = {
    errno.ENOSPC: "free space on that disk or write to a folder on another disk",
    errno.EDQUOT: "free space within your disk quota or write to another folder",
    errno.EROFS: "choose a folder on a writable disk",
    errno.EACCES: "choose a folder you may write to, or change its permissions",
    errno.EPERM: "choose a folder you may write to, or change its permissions",
    errno.ENOTDIR: "a file stands where a folder is needed; move it or choose another path",
    errno.EISDIR: "a folder stands where a file is needed; move it or choose another path",
    # mkdir of a folder where a file of that name stands (the folders spikeforge makes)
    errno.EEXIST: "a file stands where a folder is needed; move it or choose another path",
}


def describe(err: OSError, path: str | os.PathLike | None = None, verb: str = "write") -> str:
    """One sentence for ``err``: ``cannot write PATH (CAUSE); FIX.``

    ``path`` is the file the user knows (a temporary name in ``err.filename`` is not shown);
    without it, ``err.filename`` is named.
    """
    where = path if path is not None else (err.filename or "a file")
    code, cause = err.errno, err.strerror
    found = re.search(r"errno = (\d+)", str(err))
    if found:  # h5py (NIR files): a long message around the C library's errno
        code = int(found[1])
        cause = os.strerror(code)
    cause = cause or str(err) or type(err).__name__
    fix = _FIXES.get(code, "check the path and try again")
    return f"cannot {verb} {where} ({cause}); {fix}."


@contextlib.contextmanager
def writing(path: str | os.PathLike) -> Iterator[None]:
    """Turn an :class:`OSError` raised inside the block into a :class:`WriteError` naming
    ``path``, the file or folder the user asked for (not the temporary name being written)."""
    try:
        yield
    except WriteError:
        raise
    except OSError as err:
        raise WriteError(describe(err, path)) from None


def _discard(path: Path) -> None:
    """Remove a temporary file, ignoring every failure (it may never have been created)."""
    with contextlib.suppress(OSError):
        path.unlink()


@contextlib.contextmanager
def replacing(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same suffix, so libraries that pick the format
    by name still do) for the block to write; when the block ends, rename it over ``path``;
    when it fails, remove it. Parents are created; :class:`OSError` → :class:`WriteError`."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            yield tmp
            os.replace(tmp, path)
        except BaseException:
            _discard(tmp)
            raise


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def discard_stale(path: str | os.PathLike) -> list[Path]:
    """Remove the temporary files that :func:`replacing` left beside ``path`` in a process that
    no longer runs (killed with SIGKILL mid-write; a live writer's file is kept); return them."""
    path = Path(path)
    head, tail = f".{path.stem}.", f".tmp{path.suffix}"
    stale = [tmp for tmp in path.parent.glob(f"{glob.escape(head)}*{glob.escape(tail)}")
             if tmp.name[len(head):-len(tail)].isdigit()
             and not _running(int(tmp.name[len(head):-len(tail)]))]
    for tmp in stale:
        _discard(tmp)
    return stale


def atomic_write(path: str | os.PathLike, data: bytes | str, *, durable: bool = True) -> Path:
    """Write ``data`` (str as UTF-8) to ``path`` via a temporary file and a rename; parents are
    created. ``durable`` flushes the file to disk before the rename (a crash leaves the old
    file or the new one). Raises :class:`WriteError`; on failure the old file is unchanged and
    no temporary file remains."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    with replacing(path) as tmp:
        write_bytes(tmp, payload, durable=durable)
    return Path(path)


def write_bytes(path: str | os.PathLike, payload: bytes, *, durable: bool = True) -> None:
    """Write ``payload`` to ``path`` in place (flushed to disk when ``durable``); the one
    place file contents reach the disk. Callers write to a temporary name and rename."""
    with open(path, "wb") as f:
        f.write(payload)
        f.flush()
        if durable:
            os.fsync(f.fileno())


def fsync_dir(path: str | os.PathLike) -> None:
    """Flush a folder's entries (renames inside it) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
