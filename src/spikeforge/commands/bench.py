"""``spikeforge bench RECIPE``: time a recipe's training and evaluation steps.

    spikeforge bench fc-lif [-b B] [-T T] [--iters N] [--amp] [--device D] [--json]
                            [--threads N]

The model, loss and optimizer are the recipe's own (``spikeforge recipes``). Image recipes run
on random MNIST-like tensors (81 % zero pixels), so no dataset is needed. N-MNIST runs at real
activity, since its sparse kernels' work follows the spikes: the first test digits of MNIST
(``--data-dir``) recorded by the saccade simulator (the recordings ``spikeforge data
simulate-nmnist`` writes to ``Test/``), framed as in training (Denoise, 1 ms bins), through a
network trained on simulated N-MNIST (weights in ``bench_nmnist/``, how they were trained in its
``activity.json``). Prints images/s for a training step (encode, forward, loss, backward,
optimizer step) and an evaluation step (no gradient), medians of ``--iters`` steps each after
half a second of warm-up steps; the firing rate of each spiking layer on the batch, the thread
count, the peak resident memory of the process, and when the first training step finished after
launch. ``--device cuda`` times the GPU path (Triton kernels; the
peak GPU memory is reported beside the process's).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HELP = "time a recipe's training and evaluation steps on random data (images/s, peak memory)"
THREADS = True

#: Fraction of MNIST pixels that are exactly zero, for random images.
ZERO_PIXELS = 0.81
#: N-MNIST frames per sample when the recipe leaves T to the data (≈ 300 ms at 1 ms bins).
NMNIST_T = 300
#: Seconds of training steps run after the first one and before timing, while caches, the
#: allocator's heap and OpenMP's threads settle: rleaky's and fc-lif's steps 2-5 after launch ran
#: 1.1-1.6x, steps 6-20 up to 1.4x slower than steps 200-400 (AMD EPYC Zen 5, 2 threads).
WARMUP_S = 0.5
#: Trained nmnist-csnn weights (a checkpoint folder's ``model.safetensors``) and the record of
#: the run that trained them (``activity.json``).
TRAINED_NMNIST = Path(__file__).with_name("bench_nmnist")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="fc-lif, csnn, nmnist-csnn, rleaky, ...")
    parser.add_argument("-b", "--batch-size", type=int, help="default: the recipe's")
    parser.add_argument("-T", type=int, dest="T", help="time steps (default: the recipe's; "
                        f"{NMNIST_T} frames for N-MNIST)")
    parser.add_argument("--iters", type=int, default=5, help="timed steps of each kind (5)")
    parser.add_argument("--amp", action="store_true", help="bf16 autocast")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--data-dir", help="MNIST folder for nmnist-csnn's simulated recordings "
                        "(default: spikeforge's usual search, then download)")


@dataclass
class Workload:
    """One recipe's training and evaluation step on a fixed random batch."""

    recipe: str
    batch: int
    steps: int
    train: Any
    evaluate: Any
    model: Any
    rates: Any
    restore: Any  # back to the starting weights (their activity), outside the timed steps


def random_batch(batch: int, seed: int = 0):
    """(images ``[B, 1, 28, 28]`` with :data:`ZERO_PIXELS` exact zeros, labels ``[B]``)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 10, (batch,), generator=g)
    images = torch.rand(batch, 1, 28, 28, generator=g, dtype=torch.float32)
    images[torch.rand(images.shape, generator=g) < ZERO_PIXELS] = 0
    return images, labels


def nmnist_batch(batch: int, steps: int, data_dir=None, *, denoise_us: float = 10000.0,
                 time_window_us: float = 1000.0, download: bool = True):
    """(frames ``float32 [steps, B, 2, 34, 34]`` (event counts), labels ``[B]``): the saccade
    simulator's recordings of the first ``batch`` MNIST test digits (seed ``(0, 1)``, as
    ``spikeforge data simulate-nmnist`` writes ``Test/``), through Tonic's Denoise and ToFrame,
    zero-padded or cropped to ``steps`` frames. Raises DataError when MNIST cannot be found."""
    import numpy as np
    import torch

    from ..data.nmnist import transform_events
    from ..data.saccade import simulate_saccades
    from ..data.static import load_dataset

    mnist = load_dataset("mnist", "test", data_dir=data_dir, download=download)
    n = min(batch, len(mnist))
    recordings = simulate_saccades(mnist.images[:n].numpy(), range(n), (0, 1))
    frames = np.zeros((steps, batch, 2, 34, 34), dtype=np.float32)
    for b in range(batch):
        f = transform_events(recordings[b % n], denoise_us, time_window_us)[:steps]
        frames[:len(f), b] = f
    labels = mnist.labels[:n].long().repeat((batch + n - 1) // n)[:batch]
    return torch.from_numpy(frames), labels


def workload(recipe: str, batch: int | None = None, steps: int | None = None,
             amp: bool = False, seed: int = 0, data_dir=None,
             device: str = "cpu") -> Workload:
    """The recipe's model, loss and optimizer with train/evaluate closures on a fixed batch:
    random images, or for N-MNIST :func:`nmnist_batch` through the trained weights, all on
    ``device``; each closure returns once the device has finished its work."""
    import contextlib

    import torch

    from .. import functional as SF
    from ..train import build, checkpoint, recipes

    config = recipes.recipe_defaults(recipe)
    if batch is not None:
        config.batch_size = batch
    if steps is not None:
        config.T = steps
    if config.T is None:
        config.T = NMNIST_T
    config = recipes.validate(config)
    dev = torch.device(device)
    torch.manual_seed(seed)
    model = build.build_model(config).to(dev)
    optimizer = build.build_optimizer(config, model.parameters())
    task = build.build_task(config)
    if config.model == "nmnist-csnn":
        x, y = nmnist_batch(config.batch_size, config.T, data_dir, denoise_us=config.denoise_us,
                            time_window_us=config.time_window_us)
        checkpoint.load_weights(TRAINED_NMNIST, model, config.model)
    else:
        x, y = random_batch(config.batch_size, seed)
    x, y = x.to(dev), y.to(dev)
    generator = torch.Generator(dev).manual_seed(seed)

    def outputs():
        return task.outputs(task.run(model, x, generator))

    def cast():
        return (torch.autocast(dev.type, dtype=torch.bfloat16) if amp
                else contextlib.nullcontext())

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
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    def rates() -> list[float]:
        return firing_rates(model, lambda: task.run(model, x, generator))

    start = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def restore() -> None:
        model.load_state_dict(start)

    return Workload(recipe, config.batch_size, config.T, train_step, eval_step, model, rates,
                    restore)


def firing_rates(model, forward) -> list[float]:
    """Fraction of neuron-steps that spike in each spiking layer of ``model`` (input side
    first) during ``forward()``, run without gradient."""
    import torch

    from .. import functional as SF
    from ..neuron import SpikingNeuron

    neurons = [m for m in model.modules() if isinstance(m, SpikingNeuron)]
    SF.reset(model)
    for neuron in neurons:
        neuron.record = True
    try:
        with torch.no_grad():
            forward()
        return [n.s_seq.float().mean().item() for n in neurons]
    finally:
        for neuron in neurons:
            neuron.record = False
        SF.reset(model)


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
    the weights go back to their start after each step (so the activity stays that of the
    batch's trained net), and the thread count follows the load between steps as in training
    (:func:`threads.adapt`)."""
    import statistics

    from .. import threads

    def median(fn) -> float:
        times = []
        for _ in range(iters):
            threads.adapt()
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
            w.restore()
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
    from ..train.build import resolve_device

    if args.iters < 1:
        raise ConfigError(f"--iters must be >= 1, got {args.iters}.")
    device = resolve_device(args.device)
    w = workload(args.recipe, args.batch_size, args.T, args.amp, data_dir=args.data_dir,
                 device=str(device))
    threads.adapt(force=True)
    t0 = time.perf_counter()
    w.train()
    first_step = time.perf_counter() - t0
    launch_to_first = process_age()
    w.restore()
    warm_until = time.perf_counter() + WARMUP_S
    while time.perf_counter() < warm_until:
        w.train()
        w.restore()
    rates = w.rates()
    w.evaluate()
    result = {"recipe": w.recipe, "batch": w.batch, "T": w.steps, "amp": args.amp,
              "device": str(device), **measure(w, args.iters), "first_step_s": first_step,
              "first_step_after_launch_s": launch_to_first, "peak_rss_mib": peak_rss_mib(),
              "threads": torch.get_num_threads(), "threads_policy": _policy(threads),
              "firing_rates": rates}
    if device.type == "cuda":
        result["peak_cuda_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    where = "" if device.type == "cpu" else f", on {device}"
    print(f"{w.recipe}: batch {w.batch}, T {w.steps}{', bf16 autocast' if args.amp else ''}"
          f"{where}, threads {result['threads']} ({result['threads_policy']})")
    print(f"  train  {result['train_img_s']:10.1f} img/s   ({result['train_s'] * 1e3:.1f} ms/step)")
    print(f"  eval   {result['eval_img_s']:10.1f} img/s   ({result['eval_s'] * 1e3:.1f} ms/step)")
    print("  firing rates " + ", ".join(f"layer {i + 1} {r:.3f}"
                                        for i, r in enumerate(result["firing_rates"]))
          + " (spikes per neuron and step)")
    print(f"  peak memory {result['peak_rss_mib']:.0f} MiB; first training step "
          f"{first_step:.2f} s, done {launch_to_first:.1f} s after launch")
    if "peak_cuda_mib" in result:
        print(f"  peak GPU memory {result['peak_cuda_mib']:.0f} MiB")
    return 0
