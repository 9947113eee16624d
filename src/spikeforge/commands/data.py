"""``spikeforge data``: inspect, fetch, simulate and pre-cache datasets.

    spikeforge data info DIR [--json] [--no-checksums]    (exit 2 when a file is damaged)
    spikeforge data download mnist|fashion-mnist [--data-dir D]
    spikeforge data simulate-nmnist --mnist-dir D --out DIR [--limit N] [--seed S] [--workers W]
    spikeforge data prepare-nmnist ROOT [--split train|test|both] [--cache-dir C] [--workers W]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import sys
from pathlib import Path

HELP = "inspect, download, simulate (N-MNIST from MNIST) and pre-cache datasets"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    info = sub.add_parser("info", help="what a data folder holds: counts per split and class, "
                          "checksums")
    info.add_argument("folder", help="folder with MNIST-format files or an N-MNIST tree")
    info.add_argument("--json", action="store_true", help="print the report as JSON")
    info.add_argument("--no-checksums", action="store_true",
                      help="skip reading the N-MNIST recordings: no digest, and only their "
                           "sizes are checked, not their events (faster on large trees)")

    download = sub.add_parser("download", help="fetch MNIST or Fashion-MNIST, verified by SHA-256")
    download.add_argument("dataset", choices=["mnist", "fashion-mnist"])
    download.add_argument("--data-dir", help="where to put the files (default: "
                          "$SPIKEFORGE_DATA or ~/.cache/spikeforge/data/<dataset>)")

    sim = sub.add_parser("simulate-nmnist", help="turn MNIST into an N-MNIST-style tree of .bin "
                         "recordings (three simulated saccades per digit)")
    sim.add_argument("--mnist-dir", required=True, help="folder with the MNIST IDX files")
    sim.add_argument("--out", required=True, help="output folder (gets Train/ and Test/)")
    sim.add_argument("--limit", type=int, help="only the first N images of each split")
    sim.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    sim.add_argument("--workers", type=int, default=1, help="processes to use (default 1)")

    prep = sub.add_parser("prepare-nmnist", help="run Denoise + ToFrame once for every "
                          "recording and fill the frame cache")
    prep.add_argument("root", help="N-MNIST folder (with Train/ and Test/ or NMNIST/...)")
    prep.add_argument("--split", choices=["train", "test", "both"], default="both")
    prep.add_argument("--cache-dir", help="cache folder, used as it is (default: a folder per "
                      "dataset under $SPIKEFORGE_CACHE/nmnist, else ~/.cache/spikeforge/nmnist)")
    prep.add_argument("--workers", type=int, default=1, help="processes to use (default 1)")
    prep.add_argument("--download", action="store_true", help="download N-MNIST if absent")
    for action in (sim, prep):
        action.add_argument("--no-progress", action="store_true",
                            help="no progress on stderr (shown by default: a bar on a terminal, "
                                 "a line per tenth of each split otherwise)")


def _print_report(report: dict) -> None:
    print(f"{report['folder']}")
    for entry in report["idx"]:
        if "error" in entry:
            print(f"  {entry['path']}: ERROR {entry['error']}")
            continue
        shape = "x".join(str(s) for s in entry["shape"])
        known = entry["known"] or "not an official file"
        print(f"  {entry['path']}: {entry['kind']} {shape} {entry['dtype']}, "
              f"sha256 {entry['sha256']} ({known})")
        if "per_class" in entry:
            print(f"    per class: {entry['per_class']}")
    for split, entry in report["nmnist"].items():
        if "error" in entry:
            print(f"  N-MNIST {split} {entry['folder']}: ERROR {entry['error']}")
            continue
        empty = f" ({entry['empty']} empty, read as blank samples)" if entry["empty"] else ""
        print(f"  N-MNIST {split} {entry['folder']}: {entry['recordings']} recordings{empty}, "
              f"{entry['bytes']} bytes" + (f", sha256 {entry['sha256']}" if "sha256" in entry
                                            else ""))
        print(f"    per class: {entry['per_class']}")
    if "error" in report.get("simulation", {}):
        print(f"  simulation.json: ERROR {report['simulation']['error']}")
    elif "simulation" in report:
        print(f"  simulated: {report['simulation'].get('generator', '?')}, seed "
              f"{report['simulation'].get('seed', '?')}")


class _SplitProgress:
    """``bars(split, done, total)``: one progress display per split on stderr
    (:class:`~spikeforge.train.progress.Progress`), replaced when the split changes."""

    def __init__(self, verb: str, enabled: bool) -> None:
        self.verb, self.enabled = verb, enabled
        self.split: str | None = None
        self.bar = None

    def __call__(self, split: str, done: int, total: int) -> None:
        from ..train.progress import Progress

        if split != self.split:
            self.close()
            self.bar = Progress(f"{self.verb} {split}", total, enabled=self.enabled,
                                stream=sys.stderr, unit="recordings").__enter__()
            self.split = split
        self.bar.update(done)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar, self.split = None, None


def _damaged(report: dict) -> list[str]:
    """The path of every surveyed file or folder the survey found damaged."""
    paths = [entry["path"] for entry in report["idx"] if "error" in entry]
    paths += [entry["folder"] for entry in report["nmnist"].values() if "error" in entry]
    if "error" in report.get("simulation", {}):
        paths.append(str(Path(report["folder"]) / "simulation.json"))
    return paths


def run(args: argparse.Namespace) -> int:
    if args.data_command == "info":
        from ..data.survey import survey
        from ..errors import DataError

        report = survey(args.folder, checksums=not args.no_checksums)
        if args.json:
            print(json.dumps(report, indent=2))
        else:
            _print_report(report)
        damaged = _damaged(report)
        if damaged:
            where = "with an \"error\" in the report" if args.json else "marked ERROR above"
            fix = "it with a complete copy" if len(damaged) == 1 else \
                "them with complete copies"
            raise DataError(f"{len(damaged)} of the entries surveyed in {report['folder']} "
                            f"{'is' if len(damaged) == 1 else 'are'} damaged ({where}: "
                            f"{', '.join(damaged)}); replace {fix}.")
        return 0
    if args.data_command == "download":
        from ..data import load_dataset
        from ..data.sources import SOURCES, default_data_root, download_idx

        source = SOURCES[args.dataset]
        target = (args.data_dir if args.data_dir is not None
                  else default_data_root() / source.name)
        for split in ("train", "test"):
            download_idx(source, split, target)
            ds = load_dataset(args.dataset, split, data_dir=target, download=False)
            print(f"{args.dataset} {split}: {len(ds)} images, per class {ds.class_counts()}")
        return 0
    if args.data_command == "simulate-nmnist":
        from ..data.simulate import write_nmnist_tree
        from ..errors import ConfigError

        if args.limit is not None and args.limit < 1:
            raise ConfigError(f"--limit must be at least 1, got {args.limit}.")
        if args.seed < 0:
            raise ConfigError(f"--seed must be >= 0, got {args.seed}.")
        if args.workers < 0:
            raise ConfigError(f"--workers must be >= 0, got {args.workers}.")
        with contextlib.closing(_SplitProgress("simulate", not args.no_progress)) as bars:
            summary = write_nmnist_tree(args.mnist_dir, args.out, limit=args.limit,
                                        seed=args.seed, workers=args.workers, progress=bars)
        for split, entry in summary["splits"].items():
            print(f"{args.out}/{split}: {entry['recordings']} recordings, per class "
                  f"{entry['per_class']}")
        return 0
    if args.data_command == "prepare-nmnist":
        from ..data.nmnist import NMNIST, usable_cache_dir
        from ..errors import ConfigError

        if args.workers < 0:
            raise ConfigError(f"--workers must be >= 0, got {args.workers}.")
        splits = {"train": [True], "test": [False], "both": [True, False]}[args.split]
        cache = None if args.cache_dir is None else usable_cache_dir(args.cache_dir)
        for train in splits:
            ds = NMNIST(args.root, train=train, cache_dir=cache, download=args.download,
                        workers=args.workers)
            with contextlib.closing(_SplitProgress("prepare", not args.no_progress)) as bars:
                built = ds.prepare(progress=functools.partial(bars, ds.split_dir.name))
            print(f"{ds.split_dir}: {len(ds)} recordings, {built} newly cached in {ds.cache_dir}")
        return 0
    raise AssertionError(args.data_command)
