"""fileio: a failed write keeps the old file, leaves no temporary file, and says in one
sentence which path could not be written and why."""

from __future__ import annotations

import errno
import os

import pytest

from spikeforge import fileio
from spikeforge.errors import WriteError


def test_a_failed_atomic_write_keeps_the_old_file_and_leaves_nothing(tmp_path, monkeypatch):
    target = tmp_path / "metrics.csv"
    fileio.atomic_write(target, "old\n")

    def full(path, payload, *, durable=True):
        with open(path, "wb") as f:
            f.write(payload[:3])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(fileio, "write_bytes", full)
    with pytest.raises(WriteError) as caught:
        fileio.atomic_write(target, "new and longer\n")
    assert str(caught.value) == (f"cannot write {target} (No space left on device); free space "
                                 "on that disk or write to a folder on another disk.")
    assert target.read_text() == "old\n" and sorted(tmp_path.iterdir()) == [target]


def test_replacing_removes_what_a_library_wrote_when_it_fails(tmp_path):
    target = tmp_path / "figure.png"
    with pytest.raises(RuntimeError), fileio.replacing(target) as tmp:
        assert tmp.suffix == ".png" and tmp.parent == tmp_path
        tmp.write_bytes(b"half")
        raise RuntimeError("the library failed")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("err, expected", [
    (PermissionError(errno.EACCES, "Permission denied", "/x/.tmp"),
     "cannot write /run (Permission denied); choose a folder you may write to, or change its "
     "permissions."),
    (OSError("Unable to synchronously create file (unable to open file: name = 'a.nir', "
             "errno = 30, error message = 'Read-only file system', flags = 13)"),
     "cannot write /run (Read-only file system); choose a folder on a writable disk."),
    (FileExistsError(errno.EEXIST, "File exists"),
     "cannot write /run (File exists); a file stands where a folder is needed; move it or "
     "choose another path."),
    (OSError(errno.EIO, "Input/output error"),
     "cannot write /run (Input/output error); check the path and try again."),
])
def test_describe_names_the_path_the_cause_and_a_fix(err, expected):
    assert fileio.describe(err, "/run") == expected


def _finished_pid() -> int:
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # reaped: the pid no longer names a process
    return child.pid


def test_discard_stale_removes_only_what_a_dead_writer_left(tmp_path):
    target = tmp_path / "metrics.csv"
    dead = tmp_path / f".metrics.{_finished_pid()}.tmp.csv"
    live = tmp_path / f".metrics.{os.getpid()}.tmp.csv"   # a writer still at work
    other = tmp_path / ".metrics.notes.tmp.csv"            # not a name replacing() gives
    for path in (dead, live, other):
        path.write_text("half")
    assert fileio.discard_stale(target) == [dead]
    assert sorted(tmp_path.iterdir()) == sorted([live, other])
