"""``spikeforge predict RUN_DIR --index I`` (or ``--image FILE.png``): classify one image.

Prints each output neuron's firing rate (spikes / T) in the reference scripts' format, then the
predicted class::

    Firing rate: [[0. 0. 0. 0. 0. 0. 0. 1. 0. 0.]]
    Predicted class: 7 (7 - seven)
"""

from __future__ import annotations

import argparse

HELP = "firing rate of each output neuron and the predicted class for one test image"
THREADS = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", help="run directory written by spikeforge train")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--index", type=int, help="index of a test-set sample")
    source.add_argument("--image", metavar="FILE", help="an image file (PNG, JPEG, ...): "
                        "grey scale, resized to 28x28, white digit on black")
    parser.add_argument("--invert", action="store_true",
                        help="invert the --image first (for a dark digit on a light background)")
    parser.add_argument("--checkpoint", choices=["best", "last"], default="best")
    parser.add_argument("--data-dir", help="dataset folder (default: the run's)")
    parser.add_argument("--cache-dir", help="N-MNIST frame cache folder (default: the run's)")
    parser.add_argument("--device", default="cpu", help="cpu (default), auto, cuda, cuda:N")


def _read_image(path: str, invert: bool):
    import numpy as np
    import torch
    from PIL import Image, UnidentifiedImageError

    from ..errors import ConfigError

    try:
        with Image.open(path) as img:
            grey = img.convert("L")
            if grey.size != (28, 28):
                grey = grey.resize((28, 28), Image.BILINEAR)
            pixels = np.asarray(grey, dtype=np.float32) / 255.0
    except FileNotFoundError:
        raise ConfigError(f"--image {path} does not exist; give the path of an image file."
                          ) from None
    except (UnidentifiedImageError, OSError) as err:
        raise ConfigError(f"--image {path} is not a readable image ({err}); give a PNG or "
                          "JPEG file.") from None
    x = torch.from_numpy(1.0 - pixels if invert else pixels)
    return x.view(1, 1, 28, 28)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from ..errors import ConfigError
    from ..train.build import resolve_device
    from ..train.run import load_run

    loaded = load_run(args.run_dir, args.checkpoint, resolve_device(args.device))
    classes = None
    label = None
    if args.image is not None:
        if loaded.task.encoding == "frames":
            raise ConfigError(f"{args.run_dir} is an N-MNIST run, which takes event frames, not "
                              "an --image; use --index.")
        x = _read_image(args.image, args.invert)
    else:
        test_set = loaded.dataset("test", args.data_dir, args.cache_dir)
        if not 0 <= args.index < len(test_set):
            raise ConfigError(f"--index {args.index} is out of range; the test set has "
                              f"{len(test_set)} samples (0 to {len(test_set) - 1}).")
        sample, label = test_set.sample(args.index)
        x = sample.unsqueeze(1 if loaded.task.encoding == "frames" else 0)
        classes = getattr(test_set, "classes", None)
    spikes, membrane = loaded.forward(x, loaded.generator())
    rate = spikes.float().mean(0).cpu().numpy()
    predicted = int(loaded.task.predict(spikes, membrane)[0])
    print(f"Firing rate: {np.array2string(rate, precision=4, suppress_small=True)}")

    def name(k: int) -> str:
        return f"{k} ({classes[k]})" if classes else str(k)

    line = f"Predicted class: {name(predicted)}"
    if label is not None:
        line += f"; label: {name(label)}"
    print(line)
    return 0
