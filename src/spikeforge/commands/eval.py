"""``spikeforge eval RUN_DIR``: test loss and accuracy of a run's ``best/`` (or ``last/``).

The test set is encoded with the same random stream (and ``--amp`` autocast) as during
training, so on the same device the accuracy equals the ``test_acc`` that ``metrics.csv`` holds
for that epoch. Progress (batches done, running accuracy) goes to stderr: a bar on a terminal,
a line per tenth of the test set otherwise; ``--no-progress`` turns it off.
"""

from __future__ import annotations

import argparse

HELP = "test accuracy and loss of a trained run's best (or last) checkpoint"
THREADS = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", help="run directory written by spikeforge train")
    parser.add_argument("--checkpoint", choices=["best", "last"], default="best",
                        help="which checkpoint to evaluate (default best)")
    parser.add_argument("--data-dir", help="dataset folder (default: the run's)")
    parser.add_argument("--cache-dir", help="N-MNIST frame cache folder (default: the run's)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    parser.add_argument("-b", "--batch-size", type=int, help="batch size (default: the run's)")
    parser.add_argument("--max-batches", type=int, metavar="N", help="evaluate N batches only")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress on stderr while the test set is evaluated")


def run(args: argparse.Namespace) -> int:
    import itertools
    import json
    import sys

    from ..errors import ConfigError
    from ..train.build import amp_dtype, resolve_device
    from ..train.loop import evaluate
    from ..train.run import load_run

    for name in ("batch_size", "max_batches"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {value}.")
    loaded = load_run(args.run_dir, args.checkpoint, resolve_device(args.device))
    test_set = loaded.dataset("test", args.data_dir, args.cache_dir)
    batch_size = args.batch_size or loaded.train_config.batch_size
    total = test_set.num_batches(batch_size)
    if args.max_batches is not None:
        total = min(total, args.max_batches)
    # each batch is done with before the next is drawn, so N-MNIST may reuse one buffer
    batches = itertools.islice(test_set.batches(batch_size, device=loaded.device, reuse=True),
                               total)
    result = evaluate(loaded.model, loaded.task, batches, num_batches=total,
                      device=loaded.device, generator=loaded.generator(),
                      amp_dtype=amp_dtype(loaded.train_config, loaded.device), title="eval",
                      show_progress=not args.no_progress, stream=sys.stderr,
                      log_every=20 if loaded.device.type == "cuda" else 1)
    summary = {"run_dir": str(loaded.run_dir), "checkpoint": args.checkpoint,
               "epoch": loaded.epoch, "dataset": loaded.train_config.dataset,
               "test_acc": result.acc, "test_loss": result.loss, "images": result.images,
               "test_set_images": len(test_set), "img_per_s": result.img_per_s}
    images = f"{result.images} images" if result.images == len(test_set) else \
        f"{result.images} of its {len(test_set)} images (--max-batches)"
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"{loaded.run_dir} {args.checkpoint}/ (epoch {loaded.epoch}), "
              f"{loaded.train_config.dataset} test set, {images}: "
              f"accuracy {result.acc:.4f}, loss {result.loss:.6f}")
    return 0
