"""``spikeforge bench RECIPE``: time a recipe's training and evaluation steps on random data.

    spikeforge bench fc-lif [--batch-size B] [-T T] [--iters N] [--amp] [--json]

The model, loss and optimizer are the recipe's own (``spikeforge recipes``); the data are random
tensors of the recipe's shape, MNIST-like (81 % zero pixels) for images and 1.5 %-dense binary
event frames for N-MNIST, so no dataset is needed; for N-MNIST the two convolutions' weights are
scaled so that the hidden layers fire at ``NMNIST_RATES`` (work that follows the spikes is then
timed at a trained network's activity, not at the silence of a fresh one). Prints images/s for
a training step (encode, forward, loss, backward, optimizer step) and an evaluation step (no
gradient), the peak resident memory of the process, and when the first training step finished
after launch.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from typing import Any

HELP = "time a recipe's training and evaluation steps on random data (images/s, peak memory)"
THREADS = True

#: Fraction of MNIST pixels that are exactly zero, and N-MNIST frame density, for random data.
ZERO_PIXELS = 0.81
EVENT_DENSITY = 0.015
#: N-MNIST frames per sample when the recipe leaves T to the data (≈ 300 ms at 1 ms bins).
NMNIST_T = 300
#: Firing rates (fraction of neuron-steps) of N-MNIST's two hidden layers in the benchmark: at
#: initialisation random events never make them fire, which would leave the sparse second
#: convolution nothing to do; a trained net whose outputs fire 20–80 % of steps needs activity.
NMNIST_RATES = (0.10, 0.25)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="fc-lif, csnn, nmnist-csnn, rleaky, ...")
    parser.add_argument("--batch-size", type=int, help="default: the recipe's")
    parser.add_argument("-T", type=int, dest="T", help="time steps (default: the recipe's; "
                        f"{NMNIST_T} frames for N-MNIST)")
    parser.add_argument("--iters", type=int, default=5, help="timed steps of each kind (5)")
    parser.add_argument("--amp", action="store_true", help="bf16 autocast (CPU)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


@dataclass
class Workload:
    """One recipe's training and evaluation step on a fixed random batch."""

    recipe: str
    batch: int
    steps: int
    train: Any
    evaluate: Any
    model: Any


def random_batch(encoding: str, batch: int, steps: int, seed: int = 0):
    """(inputs, labels): images ``[B, 1, 28, 28]`` or event frames ``[T, B, 2, 34, 34]``."""
    import torch

    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 10, (batch,), generator=g)
    if encoding == "frames":
        frames = torch.rand(steps, batch, 2, 34, 34, generator=g) < EVENT_DENSITY
        return frames.float(), labels
    images = torch.rand(batch, 1, 28, 28, generator=g)
    images[torch.rand(images.shape, generator=g) < ZERO_PIXELS] = 0
    return images, labels


def workload(recipe: str, batch: int | None = None, steps: int | None = None,
             amp: bool = False, seed: int = 0) -> Workload:
    """The recipe's model, loss and optimizer with train/evaluate closures on random data."""
    import contextlib

    import torch

    from .. import functional as SF
    from ..train import build, recipes

    config = recipes.recipe_defaults(recipe)
    if batch is not None:
        config.batch_size = batch
    if steps is not None:
        config.T = steps
    if config.T is None:
        config.T = NMNIST_T
    config = recipes.validate(config)
    torch.manual_seed(seed)
    model = build.build_model(config)
    optimizer = build.build_optimizer(config, model.parameters())
    task = build.build_task(config)
    x, y = random_batch(config.encoding, config.batch_size, config.T, seed)
    if config.model == "nmnist-csnn":
        fire_at(model, x, NMNIST_RATES)
    generator = torch.Generator().manual_seed(seed)

    def outputs():
        return task.outputs(task.run(model, x, generator))

    def cast():
        return torch.autocast("cpu", dtype=torch.bfloat16) if amp else contextlib.nullcontext()

    def train_step() -> float:
        SF.reset(model)
        optimizer.zero_grad(set_to_none=True)
        with cast():
            spikes, membrane = outputs()
        loss = task.loss(spikes.float(), None if membrane is None else membrane.float(), y)
        loss.backward()
        optimizer.step()
        return loss.item()

    def eval_step() -> None:
        SF.reset(model)
        with torch.no_grad(), cast():
            spikes, membrane = outputs()
            task.predict(spikes, membrane)

    return Workload(recipe, config.batch_size, config.T, train_step, eval_step, model)


def _rate_at(model, sample, conv, base, neuron, log_scale: float) -> float:
    """Firing rate of ``neuron`` on ``sample`` with ``conv``'s weights = base·2^log_scale."""
    import torch

    from .. import functional as SF

    with torch.no_grad():
        conv.weight.copy_(base * 2.0**log_scale)
        SF.reset(model)
        neuron.record = True
        try:
            model(sample)
            return neuron.s_seq.float().mean().item()
        finally:
            neuron.record = False
            SF.reset(model)


def fire_at(model, frames, rates: tuple[float, ...], steps: int = 60, batch: int = 8) -> list:
    """Scale the weights of the model's first convolutions so that the spiking layer after
    each fires at ``rates[i]`` of its neuron-steps on the start of ``frames`` [T, B, ...]
    (bisection on log2 of the scale, layer by layer); return the rates reached."""
    import torch

    from ..neuron import SpikingNeuron

    sample = frames[:steps, :batch]
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    neurons = [m for m in model.modules() if isinstance(m, SpikingNeuron)]
    reached = []
    for conv, neuron, rate in zip(convs, neurons, rates, strict=False):
        base = conv.weight.detach().clone()
        lo, hi = 0.0, 8.0
        for _ in range(14):
            mid = (lo + hi) / 2
            below = _rate_at(model, sample, conv, base, neuron, mid) < rate
            lo, hi = (mid, hi) if below else (lo, mid)
        reached.append(_rate_at(model, sample, conv, base, neuron, hi))
    return reached


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, MiB (Linux VmHWM: unlike ru_maxrss it is
    not inherited from the parent across fork + exec)."""
    import resource
    import sys

    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**10
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def process_age() -> float:
    """Seconds since this process started (from /proc; 0 where that is unavailable)."""
    import os

    try:
        with open("/proc/self/stat", encoding="ascii") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime", encoding="ascii") as f:
            uptime = float(f.read().split()[0])
        return uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def measure(w: Workload, iters: int) -> dict[str, float]:
    """Median seconds per train and eval step over ``iters`` steps each (after one warm-up);
    the thread count follows the load between steps as in training (:func:`threads.adapt`)."""
    import statistics

    from .. import threads

    def median(fn) -> float:
        times = []
        for _ in range(iters):
            threads.adapt()
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    t_train, t_eval = median(w.train), median(w.evaluate)
    return {"train_img_s": w.batch / t_train, "eval_img_s": w.batch / t_eval,
            "train_s": t_train, "eval_s": t_eval}


def _policy(threads) -> str:
    policy = threads.current()
    return policy.describe() if policy else "torch default"


def run(args: argparse.Namespace) -> int:
    import torch

    from .. import threads
    from ..errors import ConfigError

    if args.iters < 1:
        raise ConfigError(f"--iters must be >= 1, got {args.iters}.")
    w = workload(args.recipe, args.batch_size, args.T, args.amp)
    threads.adapt(force=True)
    t0 = time.perf_counter()
    w.train()
    first_step = time.perf_counter() - t0
    launch_to_first = process_age()
    w.evaluate()
    result = {"recipe": w.recipe, "batch": w.batch, "T": w.steps, "amp": args.amp,
              **measure(w, args.iters), "first_step_s": first_step,
              "first_step_after_launch_s": launch_to_first, "peak_rss_mib": peak_rss_mib(),
              "threads": torch.get_num_threads(), "threads_policy": _policy(threads)}
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{w.recipe}: batch {w.batch}, T {w.steps}{', bf16 autocast' if args.amp else ''}, "
          f"threads {result['threads']} ({result['threads_policy']})")
    print(f"  train  {result['train_img_s']:10.1f} img/s   ({result['train_s'] * 1e3:.1f} ms/step)")
    print(f"  eval   {result['eval_img_s']:10.1f} img/s   ({result['eval_s'] * 1e3:.1f} ms/step)")
    print(f"  peak memory {result['peak_rss_mib']:.0f} MiB; first training step "
          f"{first_step:.2f} s, done {launch_to_first:.1f} s after launch")
    return 0
