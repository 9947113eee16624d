"""``spikeforge inspect RUN_DIR --index I`` / ``--grid N``: what the trained network did.

``--index I`` runs test sample ``I`` with every spiking layer recording and writes, in
``RUN_DIR/figures/`` (or ``--out-dir``)::

    input.png             the image (N-MNIST: the event frames the network saw, summed)
    output_v_heatmap.png  output-layer membrane voltage, neurons x time steps
    output_spikes.png     output-layer spike raster with each neuron's count
    layer_rates.png       mean firing rate of every spiking layer
    spike_count.gif       cumulative output spike counts over time (one frame per --gif-stride)
    event_grid.png        N-MNIST only: ON/OFF event frames over time

and prints the firing rates and the predicted class exactly as ``spikeforge predict`` does.
``--grid N`` classifies test samples ``--start .. --start+N-1`` and writes ``predictions.png``
with the wrong ones in red (``--spread``: N samples evenly spaced over the whole test set
instead, for datasets stored class by class such as N-MNIST). Each sample is run on its own
with the run's test-time random stream, so its prediction is the one ``spikeforge predict
--index`` prints.
"""

from __future__ import annotations

import argparse
import math

HELP = "figures of one test sample's recorded activity (--index I) or a prediction grid (--grid N)"
THREADS = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", help="run directory written by spikeforge train")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--index", type=int, metavar="I", help="index of a test-set sample")
    what.add_argument("--grid", type=int, metavar="N",
                      help="grid of N test samples with true and predicted labels")
    parser.add_argument("--start", type=int, default=0,
                        help="first test sample of the --grid (default 0)")
    parser.add_argument("--spread", action="store_true",
                        help="--grid of N samples evenly spaced over the test set (N-MNIST is "
                        "stored class by class)")
    parser.add_argument("--checkpoint", choices=["best", "last"], default="best")
    parser.add_argument("--data-dir", help="dataset folder (default: the run's)")
    parser.add_argument("--cache-dir", help="N-MNIST frame cache folder (default: the run's)")
    parser.add_argument("--device", default="cpu", help="cpu (default), auto, cuda, cuda:N")
    parser.add_argument("--out-dir", help="folder for the figures (default: RUN_DIR/figures)")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress on stderr while the --grid samples are classified")
    parser.add_argument("--gif-stride", type=int, metavar="K",
                        help="time steps per frame of spike_count.gif (default: at most 50 "
                        "frames)")


def _check_range(flag: str, first: int, count: int, size: int) -> None:
    from ..errors import ConfigError

    if count < 1:
        raise ConfigError(f"--grid {count} must be at least 1.")
    if first < 0 or first + count > size:
        what = f"{flag} {first} is" if count == 1 else \
            f"--grid {count} from --start {first} (samples {first} to {first + count - 1}) is"
        raise ConfigError(f"{what} out of range; the test set has {size} samples "
                          f"(0 to {size - 1}).")


def _seen(loaded, sample):
    """The input as the network gets it (N-MNIST frames cropped to the run's T), batch of 1."""
    frames = loaded.task.encoding == "frames"
    x = sample.unsqueeze(1 if frames else 0)
    return x, (loaded.task.encode(x)[:, 0] if frames else sample)


def _print_rates(spikes, prediction: int, label: int, classes) -> None:
    import numpy as np

    rate = spikes.float().mean(0).numpy()
    print(f"Firing rate: {np.array2string(rate, precision=4, suppress_small=True)}")

    def name(k: int) -> str:
        return f"{k} ({classes[k]})" if classes else str(k)

    print(f"Predicted class: {name(prediction)}; label: {name(label)}")


def _inspect_one(loaded, test_set, index: int, out, stride: int | None) -> list:
    from .. import viz
    from ..viz.recording import record

    classes = getattr(test_set, "classes", None)
    sample, label = test_set.sample(index)
    x, seen = _seen(loaded, sample)
    rec = record(loaded, x)
    prediction = int(rec.predictions[0])
    _print_rates(rec.spikes, prediction, label, classes)
    output = rec.output
    steps = output.s.shape[0]
    v, s = output.v[:, 0].reshape(steps, -1), output.s[:, 0].reshape(steps, -1)
    names = viz.style.class_names(classes, s.shape[1]) if classes else None
    tag = f"test sample {index} (label {names[label] if names else label}, predicted " \
          f"{names[prediction] if names else prediction})"
    written = [
        viz.input_image(seen, out / "input.png", title=f"Input, test sample {index}").path,
        viz.membrane_heatmap(v, out / "output_v_heatmap.png", threshold=output.threshold,
                             title=f"Output membrane ({output.kind}), {tag}").path,
        viz.spike_raster(s, out / "output_spikes.png", highlight=prediction,
                         title=f"Output spikes, {tag}").path,
        viz.layer_rates({t.label: t.rate(0) for t in rec.layers}, out / "layer_rates.png",
                        title=f"Mean firing rate per spiking layer, test sample {index}").path,
        viz.spike_count_gif(s, out / "spike_count.gif",
                            stride=stride or max(1, math.ceil(steps / 50)), classes=classes,
                            label=label).path,
    ]
    if loaded.task.encoding == "frames":
        written.append(viz.event_grid(
            seen, out / "event_grid.png", time_window_us=loaded.train_config.time_window_us,
            title=f"Event frames, test sample {index}").path)
    return written


def _grid_indices(args: argparse.Namespace, size: int) -> tuple[list[int], str]:
    """The test samples of the grid and its title."""
    if args.spread:
        _check_range("--start", 0, args.grid, size)
        step = (size - 1) / max(args.grid - 1, 1)
        return [round(k * step) for k in range(args.grid)], \
            f"{args.grid} test samples spread over all {size}"
    _check_range("--start", args.start, args.grid, size)
    return list(range(args.start, args.start + args.grid)), \
        f"Test samples {args.start}-{args.start + args.grid - 1}"


def _grid(loaded, test_set, indices: list[int], title: str, out, show_progress: bool) -> list:
    import sys

    import numpy as np

    from .. import viz
    from ..train.progress import Progress
    from ..viz.recording import record

    images, labels, predictions = [], [], []
    with Progress("classify", len(indices), enabled=show_progress, stream=sys.stderr,
                  unit="samples") as progress:
        for done, i in enumerate(indices, 1):
            sample, label = test_set.sample(i)
            x, seen = _seen(loaded, sample)
            predictions.append(int(record(loaded, x, traces=False).predictions[0]))
            labels.append(label)
            images.append(viz.polarity_rgb(seen.sum(0)) if seen.dim() == 4 else
                          seen[0].numpy())
            progress.update(done)
    grid = viz.prediction_grid(np.stack(images), labels, predictions,
                               out / "predictions.png", classes=getattr(test_set, "classes", None),
                               title=title)
    print(f"{len(indices) - len(grid.wrong)}/{len(indices)} correct")
    return [grid.path]


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..errors import ConfigError
    from ..train.build import resolve_device
    from ..train.run import load_run

    if args.gif_stride is not None and args.gif_stride < 1:
        raise ConfigError(f"--gif-stride {args.gif_stride} must be at least 1.")
    loaded = load_run(args.run_dir, args.checkpoint, resolve_device(args.device))
    test_set = loaded.dataset("test", args.data_dir, args.cache_dir)
    out = Path(args.out_dir) if args.out_dir else Path(args.run_dir) / "figures"
    if args.index is not None:
        _check_range("--index", args.index, 1, len(test_set))
        written = _inspect_one(loaded, test_set, args.index, out, args.gif_stride)
    else:
        written = _grid(loaded, test_set, *_grid_indices(args, len(test_set)), out,
                        not args.no_progress)
    print("wrote " + ", ".join(str(p) for p in written))
    return 0
