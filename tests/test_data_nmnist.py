"""N-MNIST loader on a small simulated tree: bit-exact against Tonic's own pipeline, cache, zip,
rotation."""

import os
import zipfile

import numpy as np
import pytest
import torch

tonic = pytest.importorskip("tonic")

from spikeforge.data import nmnist as nmnist_module  # noqa: E402
from spikeforge.data.binfmt import make_events, read_events, write_events  # noqa: E402
from spikeforge.data.framecache import SparseFrames, densify  # noqa: E402
from spikeforge.data.nmnist import NMNIST  # noqa: E402
from spikeforge.data.rotation import rotate_frames, rotate_sparse, rotation_sources  # noqa: E402
from spikeforge.data.saccade import simulate_saccades  # noqa: E402
from spikeforge.errors import DataError, SpikeforgeWarning  # noqa: E402

N_TRAIN, N_TEST = 14, 6


def _images(n, seed):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:28, :28]
    out = []
    for _ in range(n):
        cx, cy, r = rng.uniform(10, 18), rng.uniform(10, 18), rng.uniform(4, 8)
        out.append(((np.hypot(yy - cy, xx - cx) - r) ** 2 < 4).astype(np.uint8) * 255)
    return np.stack(out)


def _write_split(folder, n, seed):
    for i, events in enumerate(simulate_saccades(_images(n, seed), range(n), seed=seed)):
        target = folder / str(i % 10)
        target.mkdir(parents=True, exist_ok=True)
        write_events(target / f"{i + 1:05d}.bin", events)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("nmnist")
    _write_split(root / "Train", N_TRAIN, 0)
    _write_split(root / "Test", N_TEST, 1)
    return root


def _tonic_frames(path):
    transform = tonic.transforms.Compose([
        tonic.transforms.Denoise(filter_time=10000),
        tonic.transforms.ToFrame(sensor_size=tonic.datasets.NMNIST.sensor_size, time_window=1000),
    ])
    return transform(tonic.io.read_mnist_file(str(path), dtype=tonic.datasets.NMNIST.dtype))


def test_batches_equal_tonic_pipeline_and_pad_tensors(tree, tmp_path):
    ds = NMNIST(tree, train=True, cache_dir=tmp_path)
    assert len(ds) == N_TRAIN and ds.labels.tolist() == sorted(i % 10 for i in range(N_TRAIN))
    batches = list(ds.batches(5))
    assert [len(y) for _, y in batches] == [5, 5, 4] and ds.num_batches(5) == 3
    collate = tonic.collation.PadTensors(batch_first=False)
    for b, (x, y) in enumerate(batches):
        files = ds.files[5 * b: 5 * b + 5]
        expected_x, expected_y = collate([(_tonic_frames(f), int(ds.labels[5 * b + k]))
                                          for k, f in enumerate(files)])
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert x.ndim == 5 and x.shape[1:] == (len(files), 2, 34, 34)
        assert torch.equal(x, expected_x) and torch.equal(y, expected_y)


def test_sample_events_and_torch_view(tree, tmp_path):
    ds = NMNIST(tree, train=False, cache_dir=tmp_path)
    frames, label = ds.sample(3)
    assert frames.shape[1:] == (2, 34, 34) and label == int(ds.labels[3])
    assert np.array_equal(frames.numpy(), _tonic_frames(ds.files[3]))
    events = ds.events(3)
    assert events.dtype.names == ("x", "y", "t", "p")
    np.testing.assert_array_equal(
        events, tonic.io.read_mnist_file(str(ds.files[3]), dtype=tonic.datasets.NMNIST.dtype))
    loader = torch.utils.data.DataLoader(ds.torch_dataset(), batch_size=4,
                                         collate_fn=tonic.collation.PadTensors(batch_first=False))
    x, y = next(iter(loader))
    ours_x, ours_y = next(ds.batches(4))
    assert torch.equal(x, ours_x) and torch.equal(y, ours_y)


def test_transform_runs_once_per_sample_ever(tree, tmp_path, monkeypatch):
    calls = []
    original = nmnist_module.transform_events

    def counting(*args, **kwargs):
        calls.append(args[-1])
        return original(*args, **kwargs)

    monkeypatch.setattr(nmnist_module, "transform_events", counting)
    ds = NMNIST(tree, train=True, cache_dir=tmp_path)
    first = [x for x, _ in ds.batches(4, shuffle=True, epoch=0)]
    assert len(calls) == N_TRAIN
    assert all(ds.is_cached(i) for i in range(len(ds)))
    again = NMNIST(tree, train=True, cache_dir=tmp_path)  # a new process would see the same
    second = [x for x, _ in again.batches(4, shuffle=True, epoch=0)]
    assert len(calls) == N_TRAIN
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    assert again.prepare() == 0


def test_stale_or_damaged_cache_entries_are_rebuilt(tree, tmp_path):
    root = tmp_path / "copy"
    _write_split(root / "Train", 3, 7)
    ds = NMNIST(root, train=True, cache_dir=tmp_path / "cache")
    assert ds.prepare() == 3
    # a changed recording (new size and mtime) invalidates its entry
    events = read_events(ds.files[0])
    write_events(ds.files[0], events[: len(events) // 2])
    assert not ds.is_cached(0)
    assert np.array_equal(ds.sample(0)[0].numpy(), _tonic_frames(ds.files[0]))
    # a truncated entry is rebuilt, not trusted
    entry = ds._entry_path(1)
    entry.write_bytes(entry.read_bytes()[:-7])
    assert not ds.is_cached(1)
    assert np.array_equal(ds.sample(1)[0].numpy(), _tonic_frames(ds.files[1]))
    assert ds.is_cached(1)


def test_tonic_layout_inside_zip_is_extracted(tree, tmp_path):
    archive = tmp_path / "NMNIST" / "test.zip"
    archive.parent.mkdir()
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted((tree / "Test").rglob("*.bin")):
            zf.write(path, path.relative_to(tree).as_posix())
    ds = NMNIST(tmp_path, train=False, cache_dir=tmp_path / "cache")
    assert ds.split_dir == tmp_path / "NMNIST" / "Test" and len(ds) == N_TEST
    reference = NMNIST(tree, train=False, cache_dir=tmp_path / "cache2")
    assert torch.equal(next(ds.batches(N_TEST))[0], next(reference.batches(N_TEST))[0])


def test_clear_errors(tmp_path):
    with pytest.raises(DataError, match="no N-MNIST Train folder under") as info:
        NMNIST(tmp_path, train=True)
    assert str(tmp_path) in str(info.value) and "simulate-nmnist" in str(info.value)
    (tmp_path / "Train" / "foo").mkdir(parents=True)  # a Train/ without digit folders
    with pytest.raises(DataError, match=r"^.*Train holds no digit folders \(N-MNIST keeps each "
                       r"class's \.bin recordings in Train/0 … Train/9\); move the recordings "
                       r"into them\.$"):
        NMNIST(tmp_path, train=True)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(DataError, match=r"afile is a file; give the folder that holds N-MNIST"):
        NMNIST(tmp_path / "afile", train=True)
    (tmp_path / "Train" / "4").mkdir(parents=True)
    with pytest.raises(DataError, match="no .bin files"):
        NMNIST(tmp_path, train=True)
    bad = tmp_path / "Train" / "4" / "00001.bin"
    write_events(bad, make_events([40], [3], [10], [1]))
    ds = NMNIST(tmp_path, train=True, cache_dir=tmp_path / "cache")
    with pytest.raises(DataError, match="outside the 34x34 N-MNIST sensor") as info:
        ds.sample(0)
    assert str(bad) in str(info.value)
    assert not any((tmp_path / "cache").rglob("*.frames"))


def test_empty_recording_gives_one_empty_frame(tmp_path):
    folder = tmp_path / "Test" / "0"
    folder.mkdir(parents=True)
    write_events(folder / "00001.bin", make_events([], [], [], []))
    write_events(folder / "00002.bin", make_events([3, 30], [3, 30], [0, 5000], [1, 0]))
    with pytest.warns(SpikeforgeWarning, match="1 of 2 recordings"):
        ds = NMNIST(tmp_path, train=False, cache_dir=tmp_path / "cache")
    frames, _ = ds.sample(0)
    assert frames.shape == (1, 2, 34, 34) and frames.sum() == 0
    x, _ = next(ds.batches(2))
    # Tonic's Denoise keeps every event of the first filter_time (its memory starts at
    # filter_time), so both isolated events survive; ToFrame then makes floor((5000 - 0 -
    # 1000) / 1000) + 1 = 5 windows, the last ending at 5000 exclusive: the second event is cut
    assert x.shape == (5, 2, 2, 34, 34) and x.sum() == 1 and x[0, 1, 1, 3, 3] == 1
    assert np.array_equal(x[:, 1].numpy(), _tonic_frames(ds.files[1]))


def test_empty_recordings_are_counted_with_one_warning_per_split(tmp_path):
    for split, empties in (("Train", 2), ("Test", 1)):
        folder = tmp_path / split / "3"
        folder.mkdir(parents=True)
        for i in range(empties):
            (folder / f"{i:05d}.bin").write_bytes(b"")
        write_events(folder / "00099.bin", make_events([3], [3], [10], [1]))
    with pytest.warns(SpikeforgeWarning) as record:
        train = NMNIST(tmp_path, train=True, cache_dir=tmp_path / "c")
        test = NMNIST(tmp_path, train=False, cache_dir=tmp_path / "c")
    assert [str(w.message) for w in record] == [
        f"{n} of {n + 1} recordings in {tmp_path / split} are empty (0 bytes) and are read as "
        "blank samples without events; replace them with the original files or delete them."
        for split, n in (("Train", 2), ("Test", 1))]
    assert (train.empty, test.empty) == (2, 1) and len(train) == 3
    assert train.sample(0)[0].sum() == 0                    # still a (blank) sample


def test_a_clean_split_gives_no_warning(tree, tmp_path):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert NMNIST(tree, train=False, cache_dir=tmp_path).empty == 0


def test_damaged_recordings_still_fail_cleanly(tmp_path):
    folder = tmp_path / "Train" / "1"
    folder.mkdir(parents=True)
    (folder / "00001.bin").write_bytes(b"\x01\x02\x03\x04\x05\x06\x07")
    ds = NMNIST(tmp_path, train=True, cache_dir=tmp_path / "c")
    with pytest.raises(DataError, match="has 7 bytes, not a multiple of 5") as info:
        ds.sample(0)
    assert str(folder / "00001.bin") in str(info.value)


def _random_sparse(rng, length=5):
    frames = (rng.random((length, 2, 34, 34)) < 0.05) * rng.integers(1, 4, (length, 2, 34, 34))
    flat = frames.reshape(-1)
    index = np.flatnonzero(flat)
    return frames, SparseFrames(length, index, flat[index].astype(np.int16))


def test_sparse_rotation_equals_grid_sample_on_frames():
    rng = np.random.default_rng(0)
    angles = torch.tensor([-10.0, -3.3, 0.0, 7.1, 10.0, 45.0])
    sources = rotation_sources(angles, 34)
    for angle, src in zip(angles, sources, strict=True):
        frames, sparse = _random_sparse(rng)
        dense = torch.from_numpy(frames).double().reshape(1, -1, 34, 34)
        expected = rotate_frames(dense, angle[None]).reshape(frames.shape)
        got = densify(rotate_sparse(sparse, src), (2, 34, 34))
        assert np.array_equal(got, expected.numpy())


def test_rotation_by_90_degrees_is_rot90_and_nothing_leaves_the_sensor():
    rng = np.random.default_rng(1)
    frames, sparse = _random_sparse(rng)
    src = rotation_sources(torch.tensor([90.0]), 34)[0]
    turned = densify(rotate_sparse(sparse, src), (2, 34, 34))
    assert np.array_equal(turned, np.rot90(frames, k=1, axes=(-2, -1)))  # counter-clockwise
    for angle in np.linspace(-10, 10, 21):
        src = rotation_sources(torch.tensor([angle]), 34)[0]
        out = rotate_sparse(sparse, src)
        assert out.index.min() >= 0 and out.index.max() < sparse.length * 2 * 34 * 34
        # each cell stays in its own frame and polarity plane
        planes_in = set((sparse.index // (34 * 34)).tolist())
        assert set((out.index // (34 * 34)).tolist()) <= planes_in
        assert len(np.unique(out.index)) == len(out.index)
    # a corner event falls off the sensor at 45 degrees instead of wrapping anywhere
    corner = SparseFrames(1, np.array([0]), np.array([1], np.int16))
    assert len(rotate_sparse(corner, rotation_sources(torch.tensor([45.0]), 34)[0]).index) == 0


def test_augmented_batches_are_deterministic_and_resumable(tree, tmp_path):
    ds = NMNIST(tree, train=True, cache_dir=tmp_path, augment=True)
    plain = NMNIST(tree, train=True, cache_dir=tmp_path)
    run = list(ds.batches(4, shuffle=True, seed=2, epoch=1))
    again = list(ds.batches(4, shuffle=True, seed=2, epoch=1))
    resumed = list(ds.batches(4, shuffle=True, seed=2, epoch=1, start_batch=2))
    reference = list(plain.batches(4, shuffle=True, seed=2, epoch=1))
    for (x, y), (x2, y2), (xr, yr) in zip(run, again, reference, strict=True):
        assert torch.equal(x, x2) and torch.equal(y, y2) and torch.equal(y, yr)
        assert x.shape == xr.shape and not torch.equal(x, xr)
        assert abs(float(x.sum()) - float(xr.sum())) < 0.05 * float(xr.sum())
    for (x, _), (xr, _) in zip(run[2:], resumed, strict=True):
        assert torch.equal(x, xr)
    other_epoch = next(ds.batches(4, shuffle=True, seed=2, epoch=2))[0]
    assert other_epoch.shape != run[0][0].shape or not torch.equal(other_epoch, run[0][0])


def test_reused_buffer_gives_the_same_batches(tree, tmp_path):
    """Batches of changing length and size written into one buffer, each checked before the
    next is drawn, equal fresh ones; the buffer is allocated once it is large enough."""
    ds = NMNIST(tree, train=True, cache_dir=tmp_path, augment=True)
    fresh = [(x.clone(), y) for x, y in ds.batches(3, shuffle=True, seed=4)]
    assert len({x.shape for x, _ in fresh}) > 1  # lengths (and the last batch size) differ
    pointers = []
    for (x, y), (fx, fy) in zip(ds.batches(3, shuffle=True, seed=4, reuse=True), fresh,
                                strict=True):
        assert torch.equal(x, fx) and torch.equal(y, fy)
        pointers.append(x.data_ptr())
    assert len(set(pointers)) < len(pointers)


def test_shards_have_equal_batch_counts(tree, tmp_path):
    ds = NMNIST(tree, train=True, cache_dir=tmp_path)
    counts = [len(list(ds.batches(3, rank=r, world_size=3))) for r in range(3)]
    assert counts == [ds.num_batches(3, world_size=3)] * 3 == [2, 2, 2]


@pytest.mark.slow
def test_worker_processes_give_the_same_batches(tree, tmp_path):
    serial = [x for x, _ in NMNIST(tree, train=True, cache_dir=tmp_path / "a").batches(7)]
    ds = NMNIST(tree, train=True, cache_dir=tmp_path / "b", workers=2)
    parallel = [x for x, _ in ds.batches(7)]
    assert all(torch.equal(a, b) for a, b in zip(serial, parallel, strict=True))
    assert len(os.listdir(tmp_path / "b" / "train-denoise10000-window1000")) > 0


def test_download_through_tonic_from_a_local_server(tree, tmp_path, monkeypatch):
    import functools
    import hashlib
    import http.server
    import threading

    served = tmp_path / "served"
    served.mkdir()
    with zipfile.ZipFile(served / "test.zip", "w") as zf:
        for path in sorted((tree / "Test").rglob("*.bin")):
            zf.write(path, path.relative_to(tree).as_posix())
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *args: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/test.zip"
        md5 = hashlib.md5((served / "test.zip").read_bytes()).hexdigest()
        monkeypatch.setattr(tonic.datasets.NMNIST, "test_url", url)
        monkeypatch.setattr(tonic.datasets.NMNIST, "test_md5", "0" * 32)
        with pytest.raises(DataError, match="could not download N-MNIST test.zip"):
            NMNIST(tmp_path / "root", train=False, download=True)
        assert not (tmp_path / "root" / "NMNIST").exists()  # nothing half-done left, no folder
        monkeypatch.setattr(tonic.datasets.NMNIST, "test_md5", md5)
        ds = NMNIST(tmp_path / "root", train=False, download=True, cache_dir=tmp_path / "c")
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert ds.split_dir == tmp_path / "root" / "NMNIST" / "Test" and len(ds) == N_TEST
    assert (tmp_path / "root" / "NMNIST" / "test.zip").is_file()
