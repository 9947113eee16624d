"""Training and evaluation speed of the four recipes: spikeforge beside a plain per-step PyTorch
loop, SpikingJelly and snnTorch (when installed), interleaved in one process.

    python benchmarks/bench_speed.py                      # all recipes, writes JSON + RESULTS.md
    python benchmarks/bench_speed.py --recipes fc-lif --rounds 2 --no-write

Every framework gets the same batch (random MNIST-like images, or for N-MNIST the saccade
simulator's recordings of MNIST test digits, see `spikeforge bench`), the
recipe's batch size, T, loss and optimizer. Each round times every framework in turn (the order
rotates between rounds), so machine-speed drift hits all of them alike; the figures are medians
over rounds, and ratios are taken inside this one run. Peak memory is the peak RSS of a separate
process that builds and runs only that framework. The FLOP column is the model's dense
matmul/conv FLOPs per training step (as torch's FlopCounterMode counts them in the plain per-step
PyTorch baseline, the reference tutorials' way) times steps per second, over the best of a 2048³
GEMM and the recipe's heaviest convolution measured in the same run: how close each framework
comes to running the model's dense arithmetic at this machine's peak (sparse kernels that skip
work can pass 100%).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import machine_info  # noqa: E402
import results_md  # noqa: E402
import speed_baselines  # noqa: E402
import speed_frameworks  # noqa: E402
from targets import TARGETS  # noqa: E402

from spikeforge.commands import bench as sf_bench  # noqa: E402

#: recipe → (T, batch, timed steps per round); the targets are in targets.py
RECIPES = {
    "fc-lif": (100, 64, 5),
    "csnn": (4, 128, 2),
    "nmnist-csnn": (300, 128, 1),
    "rleaky": (10, 128, 10),
}
#: the heaviest convolution of each recipe, (batch, in, out, size, kernel), for the peak.
CONV_PEAK = {"csnn": (512, 64, 64, 14, 3), "nmnist-csnn": (4096, 12, 32, 15, 5)}


def makers(recipe: str, amp: bool = True, only: str | None = None) -> dict:
    """framework → maker(x, y, steps) for every framework installed here (or just ``only``)."""
    found = {
        "spikeforge": lambda x, y, t: _spikeforge(recipe, x, t, False),
        "plain-pytorch": speed_baselines.MAKERS[recipe],
    }
    if amp:
        found["spikeforge-bf16"] = lambda x, y, t: _spikeforge(recipe, x, t, True)
    for name, make in speed_frameworks.MAKERS[recipe].items():
        if only not in (None, name):
            continue
        try:
            make(*_tiny(recipe))
        except ImportError:
            continue
        found[name] = make
    return found if only is None else {only: found[only]}


def _tiny(recipe):
    steps, batch = 2, 2
    if recipe == "nmnist-csnn":
        return torch.zeros(steps, batch, 2, 34, 34), torch.zeros(batch, dtype=torch.long), steps
    return *sf_bench.random_batch(batch), steps


#: MNIST folder for N-MNIST's simulated recordings (``--data-dir``; None: spikeforge's search).
DATA_DIR: list[str | None] = [None]


def _spikeforge(recipe, x, steps, amp):
    w = sf_bench.workload(recipe, batch=x.shape[1] if x.dim() == 5 else x.shape[0], steps=steps,
                          amp=amp, data_dir=DATA_DIR[0])
    return w.train, w.evaluate


def data(recipe: str):
    """The batch every framework gets: random MNIST-like images, or for N-MNIST the simulated
    recordings ``spikeforge bench`` uses (:func:`spikeforge.commands.bench.nmnist_batch`)."""
    steps, batch = RECIPES[recipe][:2]
    if recipe == "nmnist-csnn":
        return *sf_bench.nmnist_batch(batch, steps, DATA_DIR[0]), steps
    return *sf_bench.random_batch(batch), steps


def flops_of(train_step) -> float:
    """matmul/conv FLOPs (forward + backward) of one training step, as torch counts them."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        train_step()
    return float(counter.get_total_flops())


def peak_flops(recipe: str) -> float:
    """Best FLOP/s of a 2048³ fp32 GEMM and of the recipe's heaviest convolution (fwd)."""
    a = torch.randn(2048, 2048)
    best = 0.0
    for _ in range(3):
        t0 = time.perf_counter()
        a @ a
        best = max(best, 2 * 2048**3 / (time.perf_counter() - t0))
    if recipe in CONV_PEAK:
        n, cin, cout, size, k = CONV_PEAK[recipe]
        x, w = torch.randn(n, cin, size, size), torch.randn(cout, cin, k, k)
        out = size - k + 1 if k == 5 else size
        flops = 2 * n * cout * out * out * cin * k * k
        for _ in range(2):
            t0 = time.perf_counter()
            torch.nn.functional.conv2d(x, w, padding=1 if k == 3 else 0)
            best = max(best, flops / (time.perf_counter() - t0))
    return best


#: Untimed running of a framework's step before each block of timed steps (at least one call):
#: the first steps after another framework's are slower (caches, the allocator's free lists,
#: sleeping threads), and a training run is thousands of steps in a row.
WARM_S = 0.2


def _warm(fn, seconds: float = WARM_S) -> None:
    end = time.perf_counter() + seconds
    fn()
    while time.perf_counter() < end:
        fn()


def _time(fn, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def bench_recipe(recipe: str, rounds: int, amp: bool, log) -> dict:
    steps, batch, iters = RECIPES[recipe]
    x, y, steps = data(recipe)
    fws = {name: make(x, y, steps) for name, make in makers(recipe, amp).items()}
    for name, (train, evaluate) in fws.items():
        train()
        evaluate()
        log(f"  {recipe}: {name} warmed up")
    times = {name: {"train": [], "eval": []} for name in fws}
    peaks = []
    names = list(fws)
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        peaks.append(peak_flops(recipe))
        for name in order:
            train, evaluate = fws[name]
            _warm(train)
            times[name]["train"] += _time(train, iters)
            _warm(evaluate)
            times[name]["eval"] += _time(evaluate, iters)
        log(f"  {recipe}: round {r + 1}/{rounds} done")
    result = {}
    for name, t in times.items():
        tr, ev = statistics.median(t["train"]), statistics.median(t["eval"])
        result[name] = {"train_img_s": batch / tr, "eval_img_s": batch / ev, "train_s": tr,
                        "eval_s": ev, "train_samples": t["train"], "eval_samples": t["eval"],
                        "flops_per_train_step": flops_of(fws[name][0])}
    model_flops = result["plain-pytorch"]["flops_per_train_step"]
    return {"frameworks": result, "peak_flops": max(peaks), "model_flops": model_flops,
            "T": steps, "batch": batch}


def memory_of(recipe: str, framework: str) -> dict:
    """Peak RSS of a fresh process that runs only ``framework`` (two train steps, one eval)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--memory-of", recipe, framework,
           *(["--data-dir", DATA_DIR[0]] if DATA_DIR[0] else [])]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        return {"error": proc.stderr[-500:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _memory_child(recipe: str, framework: str) -> None:
    x, y, steps = data(recipe)
    base = sf_bench.peak_rss_mib()
    train, evaluate = makers(recipe, amp=True, only=framework)[framework](x, y, steps)
    for _ in range(2):
        train()
    evaluate()
    print(json.dumps({"peak_rss_mib": sf_bench.peak_rss_mib(), "before_mib": base}))


def _load() -> float:
    return os.getloadavg()[0]


def table(results: dict) -> str:
    """The markdown table of one run."""
    lines = ["| recipe | framework | train img/s | eval img/s | spikeforge ÷ this (train, "
             "eval) | peak RSS MiB | model FLOP/s ÷ peak (train) |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for recipe, r in results["recipes"].items():
        fws = r["frameworks"]
        ours = fws["spikeforge"]
        for name, f in fws.items():
            ratio = ("" if name.startswith("spikeforge") else
                     f"{ours['train_img_s'] / f['train_img_s']:.2f}×, "
                     f"{ours['eval_img_s'] / f['eval_img_s']:.2f}×")
            mem = r.get("memory", {}).get(name, {}).get("peak_rss_mib")
            frac = r["model_flops"] / f["train_s"] / r["peak_flops"]
            lines.append(f"| {recipe} (T={r['T']}, b={r['batch']}) | {name} | "
                         f"{f['train_img_s']:,.0f} | {f['eval_img_s']:,.0f} | {ratio} | "
                         f"{'' if mem is None else f'{mem:,.0f}'} | {frac:.1%} |")
    return "\n".join(lines)


def targets(results: dict) -> str:
    lines = ["| recipe | target | train: got | eval: got | met? |", "|---|---|---:|---:|---|"]
    for recipe, r in results["recipes"].items():
        against, goal = TARGETS[recipe]
        fws = r["frameworks"]
        if against not in fws:
            lines.append(f"| {recipe} | ≥ {goal:g}× {against} | – | – | {against} not installed |")
            continue
        tr = fws["spikeforge"]["train_img_s"] / fws[against]["train_img_s"]
        ev = fws["spikeforge"]["eval_img_s"] / fws[against]["eval_img_s"]
        ok = tr >= goal and ev >= goal
        miss = "" if ok else f" (train at {tr / goal:.0%} of the target, eval {ev / goal:.0%})"
        lines.append(f"| {recipe} | ≥ {goal:g}× {against} | {tr:.2f}× | {ev:.2f}× | "
                     f"{'yes' if ok else 'no' + miss} |")
    return "\n".join(lines)


NOTES = """\
How to read it: *spikeforge ÷ this* is spikeforge's img/s over that framework's, both measured
in the same rounds of one process (torch's default thread count, OpenMP's default wait policy);
img/s is the batch over the median step time. In each round every framework runs untimed for
0.2 s, then its timed steps (train, then eval, likewise): without that, the first steps after
another framework's block, slower for every framework, were most of a short block.
`spikeforge-bf16`, when present, is the same step under `torch.autocast("cpu", bfloat16)` (not
used for the targets; spikeforge's own kernels stay float32 under it). Peak RSS is that of a
fresh process that imports and runs only that framework (two training steps and one
evaluation). SpikingJelly is installed with `pip install --no-deps spikingjelly loguru` (its
requirements would replace the CPU torch); snnTorch with `pip install -e ".[clients]"`. The
user-facing form of the spikeforge side is `spikeforge bench RECIPE`; real `spikeforge train`
runs, quiet and under load, are in the real-run section (`benchmarks/bench_train.py`).

An AVX2 machine is emulated on an AVX-512 one by running the same command with
`ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2` (torch, oneDNN
and MKL, for every framework in the process) and `SPIKEFORGE_KERNEL_ARCH=x86-64-v3`
(spikeforge's kernels built for AVX2/FMA): section `speed-avx2`.

Where spikeforge's time goes (same model, loss, optimizer, batch and T as the references):

- **Kernels on any CPU**: the sparse and Poisson kernels are written once on 16-float vectors
  (`kernels/simd16.h`, GCC/Clang vector extensions: one AVX-512 register, two AVX2, four
  SSE2/NEON), with FMA and lane-mask instructions per target; tests build the native,
  x86-64-v3, x86-64 and no-OpenMP variants and an AArch64 cross build (run under qemu-user)
  and check each against the reference.
- **fc-lif**: the Poisson draws feed the Linear directly (`encoding.poisson_linear`,
  `kernels/poisson_kernels.cpp`): only the nonzero pixels draw, 8 steps at a time as vectors
  (draws, spike tests and the currents of the 10 outputs), and backward sums the output gradient
  over the steps each pixel fired (the spikes kept for it as bytes, narrowed from the vector
  masks in steps every instruction set has). No `[T·B, 784]` spike matrix is built, so neither
  GEMM runs;
  the spikes are the ones `encoding.poisson` draws from the same generator. The LIF loop is one
  fused kernel; Adam is torch's fused implementation. The FLOP column counts the dense
  arithmetic the references do, which this skips.
- **csnn**: the first Conv-BN runs once for all T; each IF-MaxPool pair is one kernel
  (`kernels/neuron_pool.py`) that pools every step's spikes as it makes them and routes the
  pooled gradient to each window's winner, so the full-resolution spikes never reach memory;
  its backward recomputes the membranes from the input instead of saving them. The activations
  are channels-last up to the Flatten, the layout oneDNN's convolutions and batch norms are
  fastest in, with an IF-MaxPool kernel of its own that pools whole channel vectors. What is left
  is oneDNN's convolutions and the 3136×1024 GEMMs (its max-pooled input spikes are 31–55 %
  nonzero, too dense for `kernels/sparse_input.py`).
- **nmnist-csnn**: both Conv-MaxPool blocks work from the nonzero inputs only (the events, then
  layer 1's binary spikes; `kernels/sparse.py`), fused with their Leaky neurons and the Linear
  into one pass per sample; spikes equal the reference Leaky's bit for bit. This work follows
  the spikes, so every framework gets the saccade simulator's recordings of the first MNIST test
  digits and the net trained on simulated N-MNIST (`commands/bench_nmnist/`); `spikeforge bench
  nmnist-csnn` prints the firing rates it ran at.
- **rleaky**: one autograd node per RLeaky layer (hand-written BPTT) that writes each step into
  the output in place, with the elementwise step compiled; the input Linear runs once for all T
  and Adam is fused. The feedback stays a torch GEMM (as in snnTorch, so spikes match it bit for
  bit), except where it cannot matter: a fresh state's first step takes the bias alone (the GEMM
  with zero spikes is skipped, forward and weight gradient), and the 10-neuron output layer runs
  its whole backward pass, feedback gradient included, in one compiled call. The weight gradients
  of the recurrent layer and of the 784→128 encoder are summed from the nonzero inputs only
  (spikes, black pixels; `kernels/sparse_input.py`).

This benchmark runs every framework in one process with glibc's malloc at its defaults;
`spikeforge train` and `bench` also keep freed memory in the heap (`spikeforge/memory.py`),
which spares csnn ~25,000 page faults a step, so the real-run section's csnn figures are the
ones a user gets.
"""


def _names(tag: str | None) -> tuple[str, str, str]:
    """(JSON file, RESULTS.md begin marker, end marker) of a run tagged ``tag``."""
    suffix = f"-{tag}" if tag else ""
    return (f"speed{suffix}.json", f"<!-- speed{suffix}:begin -->",
            f"<!-- speed{suffix}:end -->")


def write_results_md(path: Path, results: dict, command: str) -> None:
    """Replace this benchmark's section of RESULTS.md (between its markers), or append it."""
    tag = results.get("tag")
    json_name, begin, end = _names(tag)
    m = results["machine"]
    section = "\n".join([
        begin, "## Training speed" + (f", {tag}" if tag else "")
        + " (`benchmarks/bench_speed.py`)", "",
        f"{m.get('cpu', m['machine'])}, {m['cores']} CPU cores ({m.get('isa', '')}), torch "
        f"{m['torch']} ({m['threads']} threads), "
        f"load average {m['load_start']:.1f} at start and {m['load_end']:.1f} at the end; "
        f"{m['date']}. Reproduce: `{command}`. Raw numbers: `benchmarks/{json_name}`.", "",
        table(results), "", targets(results), "",
        NOTES if not tag else "How to read it, and where the time goes: the untagged section.",
        end,
    ])
    results_md.replace_section(begin, end, section, path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--no-amp", action="store_true", help="skip the bf16 autocast column")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory processes")
    p.add_argument("--no-write", action="store_true", help="print only; keep JSON/RESULTS.md")
    p.add_argument("--render", action="store_true",
                   help="only rewrite the RESULTS.md section from benchmarks/speed.json")
    p.add_argument("--data-dir", help="MNIST folder (N-MNIST's simulated recordings are made "
                   "from its test digits)")
    p.add_argument("--tag", help="name of this configuration (e.g. avx2): writes speed-TAG.json "
                   "and its own RESULTS.md section")
    p.add_argument("--memory-of", nargs=2, metavar=("RECIPE", "FRAMEWORK"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    DATA_DIR[0] = args.data_dir
    if args.memory_of:
        _memory_child(*args.memory_of)
        return 0
    if args.render:
        results = json.loads((HERE / _names(args.tag)[0]).read_text())
        command = results.get("command", "python benchmarks/bench_speed.py")
        write_results_md(HERE / "RESULTS.md", results, command)
        return 0
    command = (f"{machine_info.isa_env()} python benchmarks/bench_speed.py "
               + " ".join(argv or sys.argv[1:])).strip()
    machine = {"machine": platform.machine(), "cpu": machine_info.cpu_model(),
               "isa": machine_info.isa(),
               "cores": os.cpu_count(),
               "torch": torch.__version__, "threads": torch.get_num_threads(),
               "date": str(date.today()), "load_start": _load()}
    results = {"machine": machine, "command": command, "tag": args.tag, "recipes": {}}

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    for recipe in args.recipes:
        r = bench_recipe(recipe, args.rounds, not args.no_amp, log)
        if not args.no_memory:
            r["memory"] = {name: memory_of(recipe, name) for name in r["frameworks"]}
        results["recipes"][recipe] = r
        if not args.no_write:  # saved after every recipe, so a later failure loses nothing
            (HERE / _names(args.tag)[0]).write_text(json.dumps(results, indent=1))
    machine["load_end"] = _load()
    print(table(results))
    print()
    print(targets(results))
    if not args.no_write:
        (HERE / _names(args.tag)[0]).write_text(json.dumps(results, indent=1))
        write_results_md(HERE / "RESULTS.md", results, command)
    return 0


if __name__ == "__main__":
    sys.exit(main())
