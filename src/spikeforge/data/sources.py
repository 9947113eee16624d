"""Where dataset files come from: local folders first, then verified downloads.

A folder the user names (``data_dir``, ``--data-dir``) is the only place searched, also its
``MNIST/raw``-style sub-folders, any usual file name, and it is never written into by a search:
with the files missing, :class:`DataError` names the folder, the files expected and the command
that downloads them there (``spikeforge data download NAME --data-dir DIR``, which calls
:func:`download_idx`), or says that the folder holds N-MNIST instead. Without ``data_dir``
(offline-first: every local place is tried before the network):

1. the default folder ``$SPIKEFORGE_DATA`` or ``~/.cache/spikeforge/data``, ``<name>/`` inside;
2. for Fashion-MNIST, the Debian package folder ``/usr/share/datasets/fashion-mnist``;
3. the download mirrors, when ``download=True``, into the default folder: each mirror in turn, a
   few retries with a timeout, the SHA-256 of the *decompressed* content checked, written to a
   temporary name and renamed only when correct, so no partial or wrong file is ever left.

With nothing found and no download, :class:`DataError` says where it looked and what to put there.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import shutil
import socket
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError
from ..fileio import replacing, writing
from .idx import GZIP_MAGIC, find_idx_file, idx_file_names
from .kinds import holds_nmnist


@dataclass(frozen=True)
class RemoteFile:
    """One dataset file: its canonical (gzip) name and the SHA-256 of its decompressed bytes."""

    stem: str
    sha256: str

    @property
    def filename(self) -> str:
        return self.stem + ".gz"


@dataclass(frozen=True)
class DatasetSource:
    """A downloadable IDX dataset: files per split, mirrors, extra local folders."""

    name: str
    title: str
    mirrors: tuple[str, ...]
    files: dict[str, tuple[RemoteFile, RemoteFile]]  # split -> (images, labels)
    subdirs: tuple[str, ...]
    system_dirs: tuple[str, ...] = ()


MNIST = DatasetSource(
    name="mnist",
    title="MNIST",
    mirrors=(
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ),
    files={
        "train": (
            RemoteFile("train-images-idx3-ubyte",
                       "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
            RemoteFile("train-labels-idx1-ubyte",
                       "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
        ),
        "test": (
            RemoteFile("t10k-images-idx3-ubyte",
                       "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
            RemoteFile("t10k-labels-idx1-ubyte",
                       "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
        ),
    },
    subdirs=("", "mnist", "MNIST", "MNIST/raw"),
)

FASHION_MNIST = DatasetSource(
    name="fashion-mnist",
    title="Fashion-MNIST",
    mirrors=(
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "https://github.com/zalandoresearch/fashion-mnist/raw/master/data/fashion/",
    ),
    files={
        "train": (
            RemoteFile("train-images-idx3-ubyte",
                       "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"),
            RemoteFile("train-labels-idx1-ubyte",
                       "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"),
        ),
        "test": (
            RemoteFile("t10k-images-idx3-ubyte",
                       "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"),
            RemoteFile("t10k-labels-idx1-ubyte",
                       "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"),
        ),
    },
    subdirs=("", "fashion-mnist", "fashion_mnist", "FashionMNIST", "FashionMNIST/raw"),
    system_dirs=("/usr/share/datasets/fashion-mnist",),
)

SOURCES: dict[str, DatasetSource] = {"mnist": MNIST, "fashion-mnist": FASHION_MNIST}
KNOWN_SHA256: dict[str, str] = {
    f.sha256: f"{src.title} {f.stem}" for src in SOURCES.values() for pair in src.files.values()
    for f in pair
}


def default_data_root() -> Path:
    """``$SPIKEFORGE_DATA``, else ``~/.cache/spikeforge/data``."""
    env = os.environ.get("SPIKEFORGE_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "spikeforge" / "data"


def search_dirs(source: DatasetSource, data_dir: str | os.PathLike | None) -> list[Path]:
    """Every local folder searched for ``source``'s files, in order: ``data_dir`` and its usual
    sub-folders only, when given; else the default folder, then the system folders."""
    if data_dir is not None:
        return [Path(data_dir).expanduser() / sub for sub in source.subdirs]
    return [default_data_root() / source.name, *(Path(d) for d in source.system_dirs)]


def sha256_of_content(path: str | os.PathLike) -> str:
    """SHA-256 of the file's content, decompressed first when it is gzip."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        gz = fh.read(2) == GZIP_MAGIC
        fh.seek(0)
        stream = gzip.GzipFile(fileobj=fh) if gz else fh
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


class _BadDownload(Exception):
    """A download that must not be kept; ``retry`` says whether the same mirror may be retried."""

    def __init__(self, reason: str, retry: bool):
        super().__init__(reason)
        self.retry = retry


def _fetch(url: str, dest_dir: Path, sha256: str, timeout: float) -> Path:
    """Download ``url`` into a temporary file in ``dest_dir``; check length and content hash."""
    with writing(dest_dir):
        fd, tmp_name = tempfile.mkstemp(prefix=".download-", suffix=".part", dir=dest_dir)
    tmp = Path(tmp_name)
    try:
        request = urllib.request.Request(url, headers={"User-Agent": "spikeforge"})
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(request, timeout=timeout) as resp:
            expected = resp.headers.get("Content-Length")
            received = 0
            while chunk := resp.read(1 << 20):
                with writing(dest_dir):  # a full disk is not a network failure: no retry
                    out.write(chunk)
                received += len(chunk)
        if expected is not None and received != int(expected):
            raise _BadDownload(f"connection dropped after {received} of {expected} bytes", True)
        try:
            actual = sha256_of_content(tmp)
        except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as err:
            raise _BadDownload(f"damaged gzip data ({err})", True) from None
        if actual != sha256:
            raise _BadDownload(f"checksum mismatch (SHA-256 {actual[:12]}..., "
                               f"expected {sha256[:12]}...)", False)
        return tmp
    except urllib.error.HTTPError as err:
        tmp.unlink(missing_ok=True)
        raise _BadDownload(f"HTTP {err.code}", err.code >= 500) from None
    except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
        tmp.unlink(missing_ok=True)
        reason = getattr(err, "reason", None) or err
        unknown_host = isinstance(reason, socket.gaierror)  # no DNS: retrying will not help
        raise _BadDownload(f"{type(err).__name__}: {reason}", not unknown_host) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def download_file(
    urls: Sequence[str],
    dest: str | os.PathLike,
    sha256: str,
    *,
    retries: int = 3,
    timeout: float = 30.0,
    backoff: float = 1.0,
) -> Path:
    """Download to ``dest`` from the first of ``urls`` that serves the right content.

    Each URL is tried up to ``retries`` times (waiting ``backoff * 2**attempt`` seconds between
    tries) unless it answers with wrong content, a 4xx status or an unknown host name. The
    SHA-256 of the decompressed content must equal ``sha256``. The file appears at ``dest`` only
    when correct.
    """
    if retries < 1:
        raise ValueError(f"retries must be >= 1, got {retries}")
    dest = Path(dest)
    with writing(dest.parent):
        dest.parent.mkdir(parents=True, exist_ok=True)
    failures = []
    for url in urls:
        for attempt in range(retries):
            try:
                tmp = _fetch(url, dest.parent, sha256, timeout)
            except _BadDownload as err:
                reason = str(err)
                if not err.retry or attempt == retries - 1:
                    break
                time.sleep(backoff * 2**attempt)
                continue
            with writing(dest):
                os.replace(tmp, dest)
            return dest
        failures.append(f"{url}: {reason}")
    raise DataError(f"could not download {dest.name} from any mirror ({'; '.join(failures)}); "
                    f"check the connection or put the file in {dest.parent} yourself.")


def _check_split(source: DatasetSource, split: str) -> None:
    if split not in source.files:
        raise DataError(f"unknown split {split!r} for {source.title}; use 'train' or 'test'.")


def _missing_in_data_dir(source: DatasetSource, split: str, folder: Path) -> DataError:
    """The error for a user's folder without ``source``'s files of ``split``."""
    if holds_nmnist(folder):
        return DataError(f"{folder} holds N-MNIST recordings (Train/Test folders of .bin files "
                         f"or their zips), not {source.title}'s IDX files; point to a folder "
                         f"with {source.title}'s files, or train nmnist-csnn on this one.")
    names = " and ".join(f.filename for f in source.files[split])
    return DataError(f"no {source.title} {split} files in {folder} (nor its "
                     f"{', '.join(s for s in source.subdirs if s)} sub-folders); put {names} "
                     "(or unzipped, or '.idx3-ubyte'-style names) there, or download them there "
                     f"with 'spikeforge data download {source.name} --data-dir {folder}'.")


def download_idx(
    source: DatasetSource,
    split: str,
    target: str | os.PathLike,
    *,
    mirrors: Sequence[str] | None = None,
    retries: int = 3,
    timeout: float = 30.0,
) -> tuple[Path, Path]:
    """The (images, labels) files of ``split`` in ``target``, downloading those not there yet
    or whose content is not the official one (a truncated or damaged file: its SHA-256 is
    checked; see :func:`download_file`). A damaged file under the official name is replaced
    atomically; one under another name is kept beside as ``NAME.damaged``, so it is neither lost
    nor found again. Only called when asked to write into ``target``."""
    _check_split(source, split)
    target = Path(target).expanduser()
    paths = []
    for f in source.files[split]:
        existing = find_idx_file([target], f.stem)
        if existing is None or not _intact(existing, f.sha256):
            urls = [m + f.filename for m in (mirrors if mirrors is not None else source.mirrors)]
            fresh = download_file(urls, target / f.filename, f.sha256, retries=retries,
                                  timeout=timeout)
            if existing is not None and existing != fresh:
                with writing(existing):
                    os.replace(existing, existing.with_name(existing.name + ".damaged"))
            existing = fresh
        paths.append(existing)
    return paths[0], paths[1]


def _intact(path: Path, sha256: str) -> bool:
    """Whether ``path``'s (decompressed) content has the SHA-256 ``sha256``."""
    try:
        return sha256_of_content(path) == sha256
    except (OSError, EOFError, zlib.error):
        return False


def locate_idx(
    source: DatasetSource,
    split: str,
    data_dir: str | os.PathLike | None = None,
    download: bool = True,
    *,
    mirrors: Sequence[str] | None = None,
    retries: int = 3,
    timeout: float = 30.0,
) -> tuple[Path, Path]:
    """Paths of the (images, labels) IDX files of ``split`` (see the module doc for the order).

    ``data_dir``: the user's folder, searched alone and never written into; raises
    :class:`DataError` naming it when the files are not there. Without it, ``download=True``
    fetches missing files into the default folder.
    """
    _check_split(source, split)
    dirs = search_dirs(source, data_dir)
    for directory in dirs:
        pair = [find_idx_file([directory], f.stem) for f in source.files[split]]
        if pair[0] is not None and pair[1] is not None:
            return pair[0], pair[1]
    if data_dir is not None:
        raise _missing_in_data_dir(source, split, Path(data_dir).expanduser())
    target = default_data_root() / source.name
    if not download:
        names = " and ".join(f.filename for f in source.files[split])
        searched = ", ".join(str(d) for d in dirs)
        raise DataError(f"no {source.title} {split} files found (searched {searched}); put "
                        f"{names} (or unzipped, or '.idx3-ubyte'-style names) in {target}, or "
                        f"download them with 'spikeforge data download {source.name}'.")
    return download_idx(source, split, target, mirrors=mirrors, retries=retries,
                        timeout=timeout)


def extract_zip(archive: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Extract ``archive`` into ``target``, refusing any member that would land outside it
    (absolute paths, ``..``, symbolic links). Files are written under temporary names first."""
    archive, target = Path(archive), Path(target)
    root = target.resolve()
    try:
        with zipfile.ZipFile(archive) as zf:
            members = zf.infolist()
            for info in members:
                dest = (root / info.filename).resolve()
                is_link = (info.external_attr >> 16) & 0o170000 == 0o120000
                if is_link or (dest != root and root not in dest.parents):
                    raise DataError(f"{archive} holds an unsafe member {info.filename!r} "
                                    "(outside the target folder or a link); refusing to "
                                    "extract it, get a clean copy of the archive.")
            for info in members:
                dest = (root / info.filename).resolve()
                if info.is_dir():
                    with writing(dest):
                        dest.mkdir(parents=True, exist_ok=True)
                    continue
                with replacing(dest) as tmp, zf.open(info) as src, open(tmp, "wb") as out:
                    shutil.copyfileobj(src, out)
    except (zipfile.BadZipFile, EOFError, zlib.error) as err:
        raise DataError(f"{archive} is not a valid zip archive ({err}); delete it and "
                        "download it again.") from None
    return target


__all__ = [
    "DatasetSource", "RemoteFile", "MNIST", "FASHION_MNIST", "SOURCES", "KNOWN_SHA256",
    "default_data_root", "search_dirs", "sha256_of_content", "download_file", "download_idx",
    "locate_idx", "extract_zip", "idx_file_names",
]
