"""Data loading speed: the MNIST batch iterator and the N-MNIST loader (cold and cached).

    python benchmarks/bench_data.py [--mnist-dir D] [--nmnist-samples N]

Writes ``benchmarks/data.json`` and the data section of ``benchmarks/RESULTS.md``. Baselines:
a per-sample ``torch.utils.data.DataLoader`` over the same images (the way the tutorials
load MNIST), and Tonic's own pipeline (``read_mnist_file`` + ``Denoise`` + ``ToFrame`` +
``PadTensors``), uncached and through ``tonic.DiskCachedDataset``. N-MNIST recordings are made
by the saccade simulator from MNIST (real MNIST when present, else random digits).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from spikeforge.data import StaticDataset, load_dataset
from spikeforge.data.nmnist import NMNIST
from spikeforge.data.simulate import write_nmnist_tree

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import results_md  # noqa: E402

BEGIN, END = "<!-- data:begin -->", "<!-- data:end -->"


def _timed(fn, repeats: int = 1) -> float:
    """Best of ``repeats`` wall-clock times (the machine is shared: the minimum is the least
    disturbed run)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def _mnist(mnist_dir: str | None) -> tuple[StaticDataset, str]:
    try:
        start = time.perf_counter()
        ds = load_dataset("mnist", "train", data_dir=mnist_dir, download=False)
        return ds, f"real MNIST train, loaded from gzip in {time.perf_counter() - start:.2f} s"
    except Exception:  # no MNIST here: same shapes, random pixels
        images = torch.randint(0, 256, (60000, 28, 28), dtype=torch.uint8)
        return StaticDataset(images, torch.randint(0, 10, (60000,))), "random 60000x28x28"


def bench_mnist(ds: StaticDataset, note: str) -> dict:
    batch = 128
    n_batches = ds.num_batches(batch)

    def epoch():
        for x, _ in ds.batches(batch, shuffle=True, seed=0, epoch=0):
            x.sum()  # touch the data, as a model would

    ours = _timed(epoch, repeats=3)
    loader = torch.utils.data.DataLoader(ds.torch_dataset(), batch_size=batch, shuffle=True)
    limit = 100

    def baseline():
        for k, (x, _) in enumerate(loader):
            x.sum()
            if k + 1 == limit:
                break

    base = _timed(baseline) / limit
    return {
        "data": note, "batch_size": batch, "batches_per_epoch": n_batches,
        "spikeforge_batches_per_s": n_batches / ours,
        "spikeforge_images_per_s": len(ds) / ours,
        "per_sample_dataloader_batches_per_s": 1 / base,
        "speedup": (n_batches / ours) * base,
    }


def _dir_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def bench_nmnist(mnist_dir: str | None, n: int, work: Path) -> dict:
    import tonic

    tree = work / "nmnist"
    start = time.perf_counter()
    try:
        write_nmnist_tree(mnist_dir, tree, limit=n)
        source = "simulated from real MNIST"
    except Exception:
        from spikeforge.data import write_idx

        rng = np.random.default_rng(0)
        for split in ("train", "t10k"):
            write_idx(work / "mnist" / f"{split}-images-idx3-ubyte",
                      rng.integers(0, 256, (n, 28, 28), dtype=np.uint8) * (rng.random(
                          (n, 28, 28)) < 0.2))
            write_idx(work / "mnist" / f"{split}-labels-idx1-ubyte",
                      np.arange(n, dtype=np.uint8) % 10)
        write_nmnist_tree(work / "mnist", tree, limit=n)
        source = "simulated from random images"
    simulate_s = time.perf_counter() - start
    batch = 128

    def epoch(ds):
        return lambda: [x.sum() for x, _ in ds.batches(batch, shuffle=True, seed=0, epoch=0)]

    cold = NMNIST(tree, train=True, cache_dir=work / "cache")
    cold_s = _timed(epoch(cold))
    cached_s = _timed(epoch(cold), repeats=3)
    augmented_s = _timed(epoch(NMNIST(tree, train=True, cache_dir=work / "cache",
                                      augment=True)), repeats=3)
    parallel = NMNIST(tree, train=True, cache_dir=work / "cache2", workers=2)
    cold_parallel_s = _timed(epoch(parallel))
    events = [len(cold.events(i)) for i in range(len(cold))]

    transform = tonic.transforms.Compose([
        tonic.transforms.Denoise(filter_time=10000),
        tonic.transforms.ToFrame(sensor_size=(34, 34, 2), time_window=1000)])

    class TonicFiles(torch.utils.data.Dataset):
        def __len__(self):
            return len(cold)

        def __getitem__(self, i):
            events = tonic.io.read_mnist_file(str(cold.files[i]), dtype=tonic.datasets.NMNIST.dtype)
            return transform(events), int(cold.labels[i])

    def tonic_epoch(dataset):
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=batch, shuffle=True,
            collate_fn=tonic.collation.PadTensors(batch_first=False))
        return lambda: [x.sum() for x, _ in loader]

    tonic_cold_s = _timed(tonic_epoch(TonicFiles()))
    disk = tonic.DiskCachedDataset(TonicFiles(), cache_path=str(work / "tonic-cache"))
    tonic_fill_s = _timed(tonic_epoch(disk))
    tonic_cached_s = _timed(tonic_epoch(disk), repeats=3)
    per = len(cold)
    return {
        "data": f"{per} N-MNIST-style recordings ({source}), mean {np.mean(events):.0f} events",
        "batch_size": batch,
        "simulator_samples_per_s": 2 * per / simulate_s,
        "cold_samples_per_s": per / cold_s,
        "cold_2_workers_samples_per_s": per / cold_parallel_s,
        "cached_samples_per_s": per / cached_s,
        "cached_augmented_samples_per_s": per / augmented_s,
        "tonic_uncached_samples_per_s": per / tonic_cold_s,
        "tonic_diskcached_first_pass_samples_per_s": per / tonic_fill_s,
        "tonic_diskcached_samples_per_s": per / tonic_cached_s,
        "cache_bytes_per_sample": _dir_bytes(work / "cache") / per,
        "tonic_cache_bytes_per_sample": _dir_bytes(work / "tonic-cache") / per,
        "recording_bytes_per_sample": _dir_bytes(tree / "Train") / per,
    }


def _section(result: dict) -> str:
    m, e = result["mnist"], result["nmnist"]
    mnist_rows = [
        ("`StaticDataset.batches` (uint8 in memory, index a batch)",
         m["spikeforge_batches_per_s"], m["spikeforge_images_per_s"]),
        ("per-sample `DataLoader` over the same tensors",
         m["per_sample_dataloader_batches_per_s"],
         m["per_sample_dataloader_batches_per_s"] * m["batch_size"]),
    ]
    nmnist_rows = [
        ("spikeforge, cold cache (Tonic transforms, then cached)", "cold_samples_per_s"),
        ("spikeforge, cold cache, `workers=2` (incl. process start-up)",
         "cold_2_workers_samples_per_s"),
        ("spikeforge, cached", "cached_samples_per_s"),
        ("spikeforge, cached + random rotation", "cached_augmented_samples_per_s"),
        ("Tonic pipeline, uncached (`DataLoader` + `PadTensors`)", "tonic_uncached_samples_per_s"),
        ("Tonic `DiskCachedDataset`, first pass", "tonic_diskcached_first_pass_samples_per_s"),
        ("Tonic `DiskCachedDataset`, cached", "tonic_diskcached_samples_per_s"),
    ]
    lines = [
        BEGIN,
        "## Data loading (`benchmarks/bench_data.py`)",
        "",
        f"{result['machine']}; {result['date']}. Best of 3 runs where repeated; raw numbers: "
        "`benchmarks/data.json`. The 2 cores are shared with other jobs: whole runs of this "
        "script have differed by up to 2x, the ratios far less.",
        "",
        f"**MNIST iterator** ({m['data']}), batch {m['batch_size']}, shuffled, float32 on CPU:",
        "",
        "| loader | batches/s | images/s |",
        "|---|---:|---:|",
        *[f"| {name} | {bps:,.1f} | {ips:,.0f} |" for name, bps, ips in mnist_rows],
        "",
        f"**N-MNIST loader** ({e['data']}), batch {e['batch_size']}, Denoise(10 ms) + "
        "ToFrame(1 ms), padded `[T, B, 2, 34, 34]`:",
        "",
        "| path | samples/s |",
        "|---|---:|",
        *[f"| {name} | {e[key]:,.0f} |" for name, key in nmnist_rows],
        "",
        f"Cache on disk per sample: spikeforge {e['cache_bytes_per_sample'] / 1024:.1f} KiB "
        f"(sparse cells, zlib), Tonic's HDF5 {e['tonic_cache_bytes_per_sample'] / 1024:.1f} KiB; "
        f"the `.bin` recording itself {e['recording_bytes_per_sample'] / 1024:.1f} KiB. "
        f"Saccade simulator: {e['simulator_samples_per_s']:,.0f} recordings/s (one process).",
        END,
    ]
    return "\n".join(lines)


def write_results(result: dict) -> None:
    (HERE / "data.json").write_text(json.dumps(result, indent=2) + "\n")
    results_md.replace_section(BEGIN, END, _section(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mnist-dir", default=os.environ.get("SPIKEFORGE_MNIST_DIR",
                                                              "/work/shared/data/mnist"))
    parser.add_argument("--nmnist-samples", type=int, default=512)
    args = parser.parse_args()
    torch.manual_seed(0)
    mnist, note = _mnist(args.mnist_dir)
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
                   f"torch {torch.__version__} ({torch.get_num_threads()} threads), load "
                   f"average {os.getloadavg()[0]:.1f} at start",
        "date": time.strftime("%Y-%m-%d"),
        "mnist": bench_mnist(mnist, note),
    }
    print(json.dumps(result["mnist"], indent=2))
    with tempfile.TemporaryDirectory() as work:
        result["nmnist"] = bench_nmnist(args.mnist_dir, args.nmnist_samples, Path(work))
    print(json.dumps(result["nmnist"], indent=2))
    write_results(result)


if __name__ == "__main__":
    main()
