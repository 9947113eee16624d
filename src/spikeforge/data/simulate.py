"""Write a simulated N-MNIST tree from MNIST: ``Train/<digit>/NNNNN.bin``, ``Test/...``.

Recording ``i`` of a split (MNIST index ``i``, file ``{i + 1:05d}.bin`` in its label's folder)
comes from :func:`spikeforge.data.saccade.simulate_saccades` with seed ``[seed, split, i]``
(split 0 = train, 1 = test), so it is the same however the work is chunked or resumed. Files
already present are kept (each was written complete, by rename), so an interrupted run resumes.
``simulation.json`` at the top records the generator, its parameters and the counts.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .. import __version__
from ..errors import ConfigError
from ..fileio import atomic_write, writing
from .binfmt import write_events
from .saccade import SaccadeConfig, simulate_saccades
from .static import load_dataset
from .workers import LazyPool

SPLITS = (("Train", "train", 0), ("Test", "test", 1))
CHUNK = 64


def _simulate_chunk(images: np.ndarray, indices: list[int], paths: list[str],
                    seed: tuple[int, int], config: SaccadeConfig) -> int:
    """Simulate and write one chunk; returns the number of events written."""
    recordings = simulate_saccades(images, indices, seed, config)
    for path, events in zip(paths, recordings, strict=True):
        write_events(path, events)
    return sum(len(r) for r in recordings)


def _check_continuable(out: Path, summary: dict) -> dict:
    """The recordings per split that ``out`` already holds of this simulation (``{}`` when
    none); raise :class:`ConfigError` when it holds recordings that this simulation would not
    have written (the real N-MNIST, another seed or saccade config): the missing ones are
    only added to a tree of the same simulation, never mixed into another."""
    if not any(out.glob("T*/[0-9]/*.bin")):
        return {}
    try:
        previous = json.loads((out / "simulation.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        previous = None
    same = json.loads(json.dumps({k: summary[k] for k in ("seed", "config")}))
    if not isinstance(previous, dict) or {k: previous.get(k) for k in same} != same:
        raise ConfigError(f"--out {out} already holds N-MNIST recordings of another source (the "
                          f"real N-MNIST, or a simulation with another seed than {summary['seed']}"
                          " or config); choose an empty folder, so they are not mixed.")
    splits = previous.get("splits")
    return {name: entry.get("recordings", 0) for name, entry in splits.items()
            if isinstance(entry, dict) and isinstance(entry.get("recordings"), int)} \
        if isinstance(splits, dict) else {}


def write_nmnist_tree(
    mnist_dir: str | os.PathLike | None,
    out: str | os.PathLike,
    *,
    limit: int | None = None,
    seed: int = 0,
    workers: int = 0,
    config: SaccadeConfig | None = None,
    progress: Callable[[str, int, int], None] = lambda split, done, total: None,
) -> dict:
    """Simulate the first ``limit`` (default all) MNIST images of each split into ``out``;
    ``progress(split, done, total)`` is called after every chunk of recordings. Recordings a
    previous run of the same simulation wrote stay, and ``simulation.json`` counts them all (a
    smaller ``limit`` into a full tree leaves it full). Raises ConfigError for a tree of another
    source."""
    cfg = config or SaccadeConfig()
    out = Path(out)
    summary = {"generator": f"spikeforge {__version__} saccade simulator", "seed": seed,
               "config": cfg.to_dict(), "splits": {}}
    held = _check_continuable(out, summary)
    with LazyPool(workers) as pool:
        for folder, split, split_id in SPLITS:
            mnist = load_dataset("mnist", split, data_dir=mnist_dir, download=False)
            n = len(mnist) if limit is None else min(limit, len(mnist))
            labels = mnist.labels[:n].tolist()
            paths = [out / folder / str(label) / f"{i + 1:05d}.bin"
                     for i, label in enumerate(labels)]
            with writing(out):
                for digit in range(10):
                    (out / folder / str(digit)).mkdir(parents=True, exist_ok=True)
            todo = [i for i in range(n) if not paths[i].exists()]
            jobs = [todo[k:k + CHUNK] for k in range(0, len(todo), CHUNK)]
            args = [(mnist.images[job].numpy(), job, [str(paths[i]) for i in job],
                     (seed, split_id), cfg) for job in jobs]
            executor = pool.get() if len(args) > 1 else None
            results = (executor.map(_simulate_chunk, *zip(*args, strict=True)) if executor
                       else (_simulate_chunk(*a) for a in args))
            done = n - len(todo)
            progress(folder, done, n)
            for job, _ in zip(jobs, results, strict=True):
                done += len(job)
                progress(folder, done, n)
            total = n  # and the recordings beyond n that an earlier, larger run left
            all_labels = mnist.labels.tolist()
            while (total < min(held.get(folder, 0), len(mnist)) and
                   (out / folder / str(all_labels[total]) / f"{total + 1:05d}.bin").exists()):
                total += 1
            summary["splits"][folder] = {
                "recordings": total,
                "per_class": np.bincount(mnist.labels[:total].tolist(), minlength=10).tolist()}
    atomic_write(out / "simulation.json", json.dumps(summary, indent=2) + "\n")
    return summary
