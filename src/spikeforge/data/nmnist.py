"""N-MNIST from a folder of ``.bin`` files, transformed by Tonic once and cached on disk.

Layout read (offline, no archive and no file count needed): ``<root>/Train/<digit>/*.bin`` and
``<root>/Test/<digit>/*.bin``, also under ``<root>/NMNIST/`` (Tonic's ``save_to`` layout). A
``train.zip``/``test.zip`` found there is extracted safely; with ``download=True`` Tonic fetches
the archive (checked by MD5) first. Sample order is Tonic's: digit folders, then file names,
sorted.

Transform of the reference recipe, done by Tonic itself::

    Denoise(filter_time=denoise_us) -> ToFrame(sensor_size=(34, 34, 2), time_window=window_us)

giving ``[T, 2, 34, 34]`` event counts, ``T`` per recording. The result of each sample is cached
(:mod:`spikeforge.data.framecache`), so Denoise's Python loop runs once per sample, ever.
Batches are ``(frames float32 [T_max, B, 2, 34, 34], labels int64 [B])``, shorter recordings
zero-padded at the end exactly like ``tonic.collation.PadTensors(batch_first=False)``. They are
assembled from the sparse cells directly on the target device (only the non-zeros travel).

``augment=True`` rotates every training sample by an angle drawn uniformly from
``[-rotation_deg, rotation_deg]`` (see :mod:`spikeforge.data.rotation`), one angle per sample
for all its frames, from ``numpy.random.default_rng([seed, epoch, rank, batch])`` so a resumed
epoch sees the same angles.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError, DataError, SpikeforgeWarning
from . import framecache
from .batchbuffer import BatchBuffer
from .binfmt import read_events
from .framecache import SparseFrames
from .kinds import find_split_dir, holds_idx
from .rotation import rotate_sparse, rotation_sources
from .sampling import batch_indices, num_batches
from .sources import extract_zip
from .workers import LazyPool

SENSOR_SIZE = (34, 34, 2)
FRAME_SHAPE = (2, 34, 34)
CLASSES = [f"{i} - {w}" for i, w in enumerate(
    ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"])]


def _tonic():
    try:
        import tonic
    except ImportError:
        raise DataError("N-MNIST needs Tonic, which is not installed; run "
                        "pip install 'spikeforge[nmnist]'.") from None
    return tonic


def check_sensor(events: np.ndarray, name: str = "<events>") -> None:
    """Raise :class:`DataError` when an event of ``events`` lies outside the 34x34 sensor."""
    if len(events) and (events["x"].max() >= 34 or events["y"].max() >= 34
                        or events["x"].min() < 0 or events["y"].min() < 0):
        raise DataError(f"{name} has events outside the 34x34 N-MNIST sensor; it is not an "
                        "N-MNIST recording, remove it from the folder.")


def transform_events(events: np.ndarray, denoise_us: float | None, time_window_us: float,
                     name: str = "<events>") -> np.ndarray:
    """Tonic's ``Denoise`` then ``ToFrame`` on N-MNIST events: int16 ``[T, 2, 34, 34]``."""
    tonic = _tonic()
    check_sensor(events, name)
    if denoise_us and len(events):
        events = tonic.transforms.Denoise(filter_time=denoise_us)(events)
    frames = tonic.transforms.ToFrame(sensor_size=SENSOR_SIZE, time_window=time_window_us)(events)
    return frames.astype(np.int16, copy=False)


def build_entry(source: str, target: str, denoise_us: float | None, time_window_us: float
                ) -> bytes:
    """Transform one ``.bin`` file and write its cache entry; returns the entry's bytes."""
    stat = os.stat(source)
    frames = transform_events(read_events(source), denoise_us, time_window_us, source)
    data = framecache.encode(framecache.sparsify(frames), stat)
    framecache.save(target, data)
    return data


def locate_split(root: str | os.PathLike, train: bool, download: bool = False) -> Path:
    """The ``Train``/``Test`` folder under ``root``, extracting or downloading it if needed."""
    root = Path(root).expanduser()
    split = "Train" if train else "Test"
    found = find_split_dir(root, train)
    if found is not None:
        return found
    archive_name = f"{split.lower()}.zip"
    archives = [base / archive_name for base in (root / "NMNIST", root)]
    archive = next((a for a in archives if a.is_file()), None)
    if archive is None and download:
        archive = _download(archives[0], train, root)
    if archive is not None:
        extract_zip(archive, archive.parent)
        found = find_split_dir(root, train)
        if found is not None:
            return found
        raise DataError(f"{archive} holds no {split}/<digit>/ folders; it is not an N-MNIST "
                        "archive, replace it.")
    if holds_idx(root):
        raise DataError(f"{root} holds MNIST-format IDX files, not N-MNIST recordings; point "
                        "to a folder with N-MNIST's Train/ and Test/ .bin files (make one with "
                        f"'spikeforge data simulate-nmnist --mnist-dir {root} --out DIR'), or "
                        "train csnn or fc-lif on this one.")
    bare = next((base / name for base in (root, root / "NMNIST")
                 for name in (split, split.lower()) if (base / name).is_dir()), None)
    if bare is not None:
        raise DataError(f"{bare} holds no digit folders (N-MNIST keeps each class's .bin "
                        f"recordings in {split}/0 … {split}/9); move the recordings into them.")
    if root.exists() and not root.is_dir():
        raise DataError(f"{root} is a file; give the folder that holds N-MNIST's Train/ and "
                        "Test/ (or is to receive them).")
    raise DataError(f"no N-MNIST {split} folder under {root} (looked for {split}/<digit>/*.bin "
                    f"and NMNIST/{split}/); copy the .bin files there, download them there with "
                    f"'spikeforge data prepare-nmnist {root} --download', or make a simulated "
                    f"set with 'spikeforge data simulate-nmnist --out {root}'.")


def _download(archive: Path, train: bool, root: Path) -> Path:
    """Tonic's download of the N-MNIST ``archive`` (checked by MD5), named only when complete;
    on failure nothing is left behind, not even the folder made for it."""
    tonic = _tonic()
    dataset = tonic.datasets.NMNIST
    url = dataset.train_url if train else dataset.test_url
    md5 = dataset.train_md5 if train else dataset.test_md5
    made = not archive.parent.exists()
    part = archive.with_name(f".{archive.name}.{os.getpid()}.part")
    try:
        tonic.download_utils.download_url(url, str(archive.parent), part.name, md5)
        os.replace(part, archive)
    except Exception as err:  # network errors of every kind end in one message
        part.unlink(missing_ok=True)
        if made and archive.parent.is_dir() and not any(archive.parent.iterdir()):
            archive.parent.rmdir()
        raise DataError(f"could not download N-MNIST {archive.name} into {archive.parent} "
                        f"({err}); put the Train/Test folders of .bin files in {root}."
                        ) from None
    return archive


def list_split(split_dir: Path) -> tuple[list[Path], torch.Tensor]:
    """``.bin`` files of a split folder in Tonic's order, and their labels (folder digit)."""
    files, labels = [], []
    for digit in range(10):
        folder = split_dir / str(digit)
        if folder.is_dir():
            names = sorted(e.name for e in os.scandir(folder)
                           if e.name.endswith(".bin") and e.is_file())
            files += [folder / n for n in names]
            labels += [digit] * len(names)
    if not files:
        raise DataError(f"{split_dir} has digit folders but no .bin files in them; copy the "
                        "N-MNIST recordings there.")
    return files, torch.tensor(labels, dtype=torch.int64)


def warn_empty_recordings(files: list[Path], split_dir: Path) -> int:
    """Count the zero-byte recordings among ``files`` and, if any, warn once, in one sentence:
    they hold no events and train as blank samples. Returns the count."""
    empty = sum(1 for f in files if os.stat(f).st_size == 0)
    if empty:
        warnings.warn(f"{empty} of {len(files)} recordings in {split_dir} are empty (0 bytes) "
                      "and are read as blank samples without events; replace them with the "
                      "original files or delete them.", SpikeforgeWarning, stacklevel=3)
    return empty


def usable_cache_dir(path: str | os.PathLike) -> Path:
    """A frame-cache folder given by the user (``--cache-dir``), made absolute (``~``
    expanded) and created when missing.

    Raises:
        ConfigError: ``path`` is empty, names a file, or cannot be created; the message names
            ``--cache-dir``, so the mistake is reported before a run writes anything.
    """
    text = os.fspath(path)
    if not str(text).strip():
        raise ConfigError("--cache-dir is empty; give the folder for N-MNIST's frame cache or "
                          "leave it out.")
    folder = Path(text).expanduser().absolute()
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"--cache-dir {folder} is a file, not a folder; give a folder for "
                          "N-MNIST's frame cache.")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"--cache-dir {folder} cannot be created ({err.strerror or err}); give "
                          "a folder on a writable disk.") from None
    return folder


def default_cache_root() -> Path:
    """``$SPIKEFORGE_CACHE`` or ``~/.cache/spikeforge``."""
    env = os.environ.get("SPIKEFORGE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "spikeforge"


class NMNIST:
    """N-MNIST train or test split (see module doc).

    ``sample(i) -> (frames float32 [T, 2, 34, 34], label)``; ``events(i)`` the raw events;
    ``batches(...)`` as :meth:`spikeforge.data.StaticDataset.batches` but yielding
    ``(frames [T_max, B, 2, 34, 34], labels [B])``. ``workers > 1`` transforms uncached samples
    in that many processes. ``empty``: how many recordings are zero-byte files (kept as blank
    samples, with a :class:`~spikeforge.errors.SpikeforgeWarning`).
    """

    sensor_size = SENSOR_SIZE
    classes = CLASSES

    def __init__(
        self,
        root: str | os.PathLike,
        train: bool = True,
        cache_dir: str | os.PathLike | None = None,
        denoise_us: float | None = 10000,
        time_window_us: float = 1000,
        augment: bool = False,
        download: bool = False,
        workers: int = 0,
        rotation_deg: float = 10.0,
    ):
        if time_window_us <= 0:
            raise DataError(f"time_window_us must be positive, got {time_window_us}; "
                            "use e.g. 1000 (1 ms frames).")
        self.train = train
        self.split_dir = locate_split(root, train, download)
        self.files, self.labels = list_split(self.split_dir)
        self.empty = warn_empty_recordings(self.files, self.split_dir)
        self.denoise_us = denoise_us or None
        self.time_window_us = time_window_us
        self.augment = augment
        self.rotation_deg = rotation_deg
        self.workers = workers
        base = Path(cache_dir).expanduser() if cache_dir is not None else (
            default_cache_root() / "nmnist"
            / hashlib.sha1(str(self.split_dir.resolve()).encode()).hexdigest()[:16])
        split = "train" if train else "test"
        self.cache_dir = base / (f"{split}-denoise{_num(self.denoise_us or 0)}"
                                 f"-window{_num(time_window_us)}")

    def __len__(self) -> int:
        return len(self.files)

    def __repr__(self) -> str:
        return f"NMNIST({str(self.split_dir)!r}, {len(self)} recordings)"

    def events(self, i: int) -> np.ndarray:
        """Raw events of recording ``i``: structured array x, y, t (us), p (1 = ON)."""
        return read_events(self.files[i])

    def _entry_path(self, i: int) -> Path:
        source = self.files[i]
        return self.cache_dir / source.parent.name / (source.stem + ".frames")

    def _cached(self, i: int) -> SparseFrames | None:
        try:
            stat = os.stat(self.files[i])
        except OSError:
            raise DataError(f"{self.files[i]} disappeared; rebuild the dataset object after "
                            "changing the folder.") from None
        return framecache.load(self._entry_path(i), stat)

    def _build(self, indices: list[int], pool: LazyPool | None = None) -> list[bytes]:
        """Transform and cache ``indices`` (in worker processes when there are several)."""
        args = [(str(self.files[i]), str(self._entry_path(i)), self.denoise_us,
                 self.time_window_us) for i in indices]
        executor = pool.get() if pool is not None and len(args) > 1 else None
        if executor is None:
            return [build_entry(*a) for a in args]
        chunk = max(1, len(args) // (4 * pool.workers))
        return list(executor.map(build_entry, *zip(*args, strict=True), chunksize=chunk))

    def _frames(self, indices: list[int], pool: LazyPool | None = None) -> list[SparseFrames]:
        out = [self._cached(i) for i in indices]
        missing = [j for j, entry in enumerate(out) if entry is None]
        if missing:
            built = self._build([indices[j] for j in missing], pool)
            for j, data in zip(missing, built, strict=True):
                out[j] = framecache.decode(data)
        return out

    def is_cached(self, i: int) -> bool:
        """Whether sample ``i`` has a valid cache entry."""
        return self._cached(i) is not None

    def prepare(self, workers: int | None = None,
                progress: Callable[[int, int], None] | None = None) -> int:
        """Fill the cache for every sample; returns how many entries were built.
        ``progress(built, to_build)`` is called after each chunk of 1024 recordings."""
        todo = [i for i in range(len(self)) if not self.is_cached(i)]
        with LazyPool(self.workers if workers is None else workers) as pool:
            for start in range(0, len(todo), 1024):
                self._build(todo[start:start + 1024], pool)
                if progress is not None:
                    progress(min(start + 1024, len(todo)), len(todo))
        return len(todo)

    def sample(self, i: int) -> tuple[torch.Tensor, int]:
        """Frames ``float32 [T, 2, 34, 34]`` of recording ``i`` (no augmentation), label."""
        entry = self._frames([i])[0]
        frames = torch.from_numpy(framecache.densify(entry, FRAME_SHAPE)).float()
        return frames, int(self.labels[i])

    def num_batches(self, batch_size: int, drop_last: bool = False, world_size: int = 1) -> int:
        """Number of batches :meth:`batches` yields on each rank."""
        return num_batches(len(self), batch_size, drop_last, world_size)

    def batches(
        self,
        batch_size: int,
        *,
        shuffle: bool = False,
        seed: int = 0,
        epoch: int = 0,
        drop_last: bool = False,
        device: str | torch.device = "cpu",
        rank: int = 0,
        world_size: int = 1,
        start_batch: int = 0,
        reuse: bool = False,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield ``(frames float32 [T_max, B, 2, 34, 34], labels int64 [B])`` on ``device``.

        ``reuse=True`` (CPU): every batch's frames share one buffer
        (:class:`~spikeforge.data.batchbuffer.BatchBuffer`), so a batch is valid only until the
        next one is drawn; the training and evaluation loops, done with each batch before the
        next, use it to skip allocating and zeroing ~370 MB a batch."""
        device = torch.device(device)
        buffer = BatchBuffer() if reuse and device.type == "cpu" else None
        plan = batch_indices(len(self), batch_size, shuffle=shuffle, seed=seed, epoch=epoch,
                             drop_last=drop_last, rank=rank, world_size=world_size,
                             start_batch=start_batch)
        with LazyPool(self.workers) as pool:
            for number, idx in enumerate(plan, start=start_batch):
                entries = self._frames(idx.tolist(), pool)
                if self.augment:
                    rng = np.random.default_rng([seed, epoch, rank, number])
                    angles = rng.uniform(-self.rotation_deg, self.rotation_deg, len(entries))
                    sources = rotation_sources(torch.from_numpy(angles), FRAME_SHAPE[-1])
                    entries = [rotate_sparse(e, s) for e, s in zip(entries, sources, strict=True)]
                yield pad_batch(entries, device, buffer), self.labels[idx].to(device)

    def torch_dataset(self) -> torch.utils.data.Dataset:
        """A map-style ``torch.utils.data.Dataset``: ``ds[i] = sample(i)``; batch it with
        ``tonic.collation.PadTensors(batch_first=False)``."""
        return _TorchView(self)


def pad_batch(entries: list[SparseFrames], device: torch.device,
              buffer: BatchBuffer | None = None) -> torch.Tensor:
    """Dense ``float32 [T_max, B, 2, 34, 34]`` of sparse samples, zero-padded in time; on the
    CPU written into ``buffer`` when one is given (valid until its next use)."""
    cells = int(np.prod(FRAME_SHAPE))
    batch = len(entries)
    length = max(e.length for e in entries)
    positions = []
    for b, entry in enumerate(entries):
        t, cell = np.divmod(entry.index, cells)
        positions.append(t * (batch * cells) + b * cells + cell)
    pos = np.concatenate(positions)
    val = np.concatenate([e.count for e in entries]).astype(np.float32)
    size = length * batch * cells
    if device.type == "cpu":
        dense = (buffer or BatchBuffer()).take(size)
        dense[pos] = val
        if buffer is not None:
            buffer.wrote(pos)
        out = torch.from_numpy(dense)
    else:  # only the non-zeros travel; the dense batch is made on the device
        out = torch.zeros(size, dtype=torch.float32, device=device)
        pinned = [torch.from_numpy(a).pin_memory() if device.type == "cuda" else
                  torch.from_numpy(a) for a in (pos, val)]
        out[pinned[0].to(device, non_blocking=True)] = pinned[1].to(device, non_blocking=True)
    return out.view(length, batch, *FRAME_SHAPE)


class _TorchView(torch.utils.data.Dataset):
    def __init__(self, dataset: NMNIST):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} samples")
        return self.dataset.sample(i)


def _num(value: float) -> str:
    return f"{value:g}"
