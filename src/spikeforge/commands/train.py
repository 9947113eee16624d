"""``spikeforge train RECIPE``: train a reference recipe into a run directory.

    spikeforge train fc-lif --epochs 1 --data-dir DIR --out-dir runs/fc-lif
    spikeforge train csnn --dataset fashion-mnist -T 4 -b 128 --amp
    spikeforge train --resume runs/fc-lif [--epochs 200]

Settings: recipe defaults < ``--config FILE.toml`` < flags (``spikeforge recipes`` lists them).
``--resume`` keeps the run's settings; only ``--epochs`` (the cosine schedule is stretched to
the new total), ``--device``, ``-j/--workers``, ``--data-dir``, ``--cache-dir`` and
``--no-download`` may change
(:data:`spikeforge.train.recipes.RUNTIME_KEYS`); any other differing flag is refused.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

HELP = "train a recipe (fc-lif, csnn, nmnist-csnn, rleaky, rleaky-membrane) into a run directory"
THREADS = True

#: flag destination -> TrainConfig field
FIELDS = {"T": "T", "device": "device", "batch_size": "batch_size", "epochs": "epochs",
          "workers": "workers", "data_dir": "data_dir", "amp": "amp", "opt": "opt",
          "momentum": "momentum", "lr": "lr", "tau": "tau", "dataset": "dataset", "seed": "seed",
          "channels": "channels", "max_batches": "max_batches", "download": "download"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", nargs="?",
                        help="fc-lif, csnn, nmnist-csnn, rleaky or rleaky-membrane "
                             "(optional with --resume)")
    parser.add_argument("-T", type=int, help="time steps (N-MNIST: keep the first T frames)")
    parser.add_argument("--device", help="auto (default: cuda if present), cpu, cuda, cuda:N")
    parser.add_argument("-b", "--batch-size", type=int, help="batch size")
    parser.add_argument("--epochs", type=int, help="number of epochs")
    parser.add_argument("-j", "--workers", type=int,
                        help="processes that build the N-MNIST frame cache")
    parser.add_argument("--data-dir", help="folder with the dataset files")
    parser.add_argument("--cache-dir", help="nmnist-csnn only: folder of N-MNIST's frame cache, "
                        "e.g. the one `spikeforge data prepare-nmnist --cache-dir` filled; saved "
                        "in config.json, --resume may change it (default: a folder under "
                        "$SPIKEFORGE_CACHE, else ~/.cache/spikeforge)")
    parser.add_argument("--out-dir", help="run directory (default: runs/RECIPE)")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue RUN_DIR from its last/")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the run that --out-dir holds")
    parser.add_argument("--amp", action="store_true", default=None,
                        help="mixed precision (bf16 on CPU, fp16 on CUDA)")
    parser.add_argument("--opt", help="optimizer: adam or sgd")
    parser.add_argument("--momentum", type=float, help="SGD momentum")
    parser.add_argument("--lr", type=float, help="learning rate")
    parser.add_argument("--tau", type=float, help="LIF membrane time constant (fc-lif)")
    parser.add_argument("--dataset", help="mnist or fashion-mnist (nmnist for nmnist-csnn)")
    parser.add_argument("--seed", type=int, help="random seed (default 0)")
    parser.add_argument("--channels", type=int, help="convolution channels (csnn)")
    parser.add_argument("--max-batches", type=int, metavar="N",
                        help="cap train and test batches per epoch (smoke runs)")
    parser.add_argument("--config", metavar="FILE", help="TOML file of settings")
    parser.add_argument("--no-download", dest="download", action="store_false", default=None,
                        help="never download the dataset")
    parser.add_argument("--no-progress", action="store_true", help="no per-epoch progress bar")
    parser.add_argument("--nproc", type=int, metavar="N",
                        help="train with N processes on this machine (DDP, as torchrun "
                             "--standalone; -b is per process)")


def run(args: argparse.Namespace) -> int:
    from .. import worker
    from ..data.nmnist import usable_cache_dir
    from ..errors import ConfigError
    from ..train import distributed, recipes
    from ..train.trainer import Dist, fit, resume_config

    ddp_worker = distributed.launched_by_torchrun()
    launcher = args.nproc is not None and args.nproc != 1  # --nproc 1: this process trains
    if launcher and not ddp_worker and not worker.launched():
        status = distributed.launch(args.nproc, args.argv, args.threads)
        if status == 130:
            print(f"spikeforge: interrupted{interrupted_hint(_out_dir(args))}", file=sys.stderr)
        return status
    distributed.follow_launcher()

    overrides = {field: getattr(args, dest) for dest, field in FIELDS.items()}
    if args.data_dir:  # saved in config.json: eval, predict and --resume may run elsewhere
        overrides["data_dir"] = str(Path(args.data_dir).absolute())
    if args.cache_dir:
        overrides["cache_dir"] = args.cache_dir
    if args.resume:
        if args.config:
            raise ConfigError("--config cannot be combined with --resume; a resumed run keeps "
                              "its own settings.")
        if args.out_dir and Path(args.out_dir) != Path(args.resume):
            raise ConfigError("--out-dir and --resume name different folders; --resume RUN_DIR "
                              "continues the run in RUN_DIR, drop --out-dir.")
        config = resume_config(Path(args.resume),
                               {"recipe": args.recipe, **overrides})
        out_dir = _out_dir(args)
    else:
        if not args.recipe:
            raise ConfigError("name a recipe (spikeforge train fc-lif) or continue a run with "
                              "--resume RUN_DIR; `spikeforge recipes` lists the recipes.")
        recipes.recipe_defaults(args.recipe)
        file_settings = recipes.read_toml(args.config) if args.config else None
        config = recipes.resolve(args.recipe, file_settings, overrides, config_path=args.config)
        out_dir = _out_dir(args)
    if config.cache_dir is not None:  # checked before the run writes anything
        config.cache_dir = str(usable_cache_dir(config.cache_dir))
    dist = distributed.setup(config.device) if ddp_worker else Dist()
    try:
        with _terminate_as_interrupt():
            history = fit(config, out_dir, resume=bool(args.resume), overwrite=args.overwrite,
                          dist=dist, show_progress=not args.no_progress,
                          log=lambda line: print(line, flush=True))
        dist.barrier()  # leave together: no rank tears down while another still writes
    except KeyboardInterrupt:
        if dist.is_main and not worker.launched():
            print(f"spikeforge: interrupted{interrupted_hint(out_dir)}", file=sys.stderr)
        return 130
    finally:
        distributed.teardown()
    if history and dist.is_main:
        print(summary(history, out_dir, config.max_batches))
    return 0


def _out_dir(args: argparse.Namespace) -> Path:
    """The run directory ``args`` name (``--resume``, ``--out-dir``, or runs/RECIPE)."""
    return Path(args.resume or args.out_dir or Path("runs") / (args.recipe or ""))


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """Inside the block, SIGTERM (``kill``, ``timeout``, a job scheduler) stops training as
    Ctrl-C does: the write in progress finishes or is undone, nothing temporary is left."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def interrupted_hint(out_dir: Path) -> str:
    """What an interrupted ``train`` kept in ``out_dir`` and how to go on ('' when it had not
    written the run yet)."""
    if (out_dir / "last").is_dir():
        return (f"; {out_dir / 'last'} keeps the last finished epoch: continue with spikeforge "
                f"train --resume {out_dir}")
    if (out_dir / "config.json").is_file():
        return (f"; no epoch had finished: spikeforge train --resume {out_dir} starts the run "
                "again from epoch 1")
    return ""


def summary(history: list[dict], out_dir, max_batches: int | None = None) -> str:
    """The closing line: the best epoch's test accuracy, and on how many test images it was
    measured when ``--max-batches`` cut the test set short (for rows written before the count
    was recorded, that ``--max-batches`` may have)."""
    best = max(history, key=lambda row: row["test_acc"])
    measured, whole = best.get("test_images"), best.get("test_set_images")
    line = f"best test accuracy {best['test_acc']:.4f} at epoch {best['epoch']}"
    if measured is not None and whole is not None and measured < whole:
        return (f"{line}, measured on {measured} of the {whole} test images (--max-batches); "
                f"the whole test set: spikeforge eval {out_dir}")
    if measured is None and max_batches is not None:
        return (f"{line}, measured with --max-batches {max_batches}, which may leave out part "
                f"of the test set; the whole test set: spikeforge eval {out_dir}")
    return f"{line}; evaluate with: spikeforge eval {out_dir}"
