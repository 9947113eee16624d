"""Real-run speed: `spikeforge train RECIPE --max-batches N` beside the reference tutorial loop
and `spikeforge bench RECIPE`, interleaved, on a quiet machine or under a chosen load.

    python benchmarks/bench_train.py --data-dir ../shared/data/mnist                  # quiet
    python benchmarks/bench_train.py --data-dir DIR --load busy --no-reference  # beside a busy loop
    python benchmarks/bench_train.py --data-dir DIR --load spikeforge  # beside a 2nd training
    python benchmarks/bench_train.py --data-dir DIR --load nproc2      # train --nproc 2
    python benchmarks/bench_train.py --data-dir DIR --recipes rleaky --rounds 1 --batches 5 \\
        --no-write                                                     # smoke test

Each round runs, every one as its own process and in an order that rotates between rounds:
``spikeforge train`` at default settings and with each fixed ``--threads K`` (img/s from the
run's own ``metrics.jsonl``; fresh run directories in a temporary folder), ``spikeforge bench``
(its JSON), and the recipe's reference loop: the SpikingJelly/snnTorch tutorial loop the
target names when installed, else the plain-PyTorch loop (``speed_frameworks.py``,
``speed_baselines.py``), timed over N steps on one real batch. Figures are medians over rounds.
MNIST comes from ``--data-dir``; nmnist-csnn trains on the saccade simulator's recordings
(``--nmnist-dir``, else simulated into the temporary folder from ``--data-dir``). Its real run
starts from a fresh net, silent at first, whereas ``spikeforge bench`` times the trained net of
``bench_nmnist/``; the bench's printed firing rates say which activity it timed.

Loads (``--load``): ``quiet`` (nothing added); ``busy`` (one ``python -c "while True: pass"``);
``spikeforge`` (a second ``spikeforge train`` of the same recipe at default settings); ``nproc2``
(the spikeforge runs use ``--nproc 2``; their img/s are the whole run's). Each load is stored
under its name in ``benchmarks/train.json``; the RESULTS.md section shows every stored load, the
fraction of its quiet throughput each keeps, and default ÷ best fixed thread count.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import machine_info  # noqa: E402
import results_md  # noqa: E402
from targets import BENCH_AGREEMENT, TARGETS  # noqa: E402

#: recipe → (batch size, batches per run, T of its loop); the reference of each: targets.py
RECIPES = {
    "fc-lif": (64, 200, 100),
    "csnn": (128, 20, 4),
    "nmnist-csnn": (128, 5, 300),
    "rleaky": (128, 200, 10),
}
LOADS = ("quiet", "busy", "spikeforge", "nproc2")


def _names(tag: str | None) -> tuple[Path, str, str]:
    """(JSON file, RESULTS.md begin marker, end marker) of runs tagged ``tag`` (e.g. ``avx2``,
    an AVX2 machine emulated through the variables of :data:`machine_info.ISA_VARIABLES`)."""
    suffix = f"-{tag}" if tag else ""
    return HERE / f"train{suffix}.json", f"<!-- train{suffix}:begin -->", \
        f"<!-- train{suffix}:end -->"


def _spikeforge(*args: str) -> list[str]:
    return [sys.executable, "-m", "spikeforge", *args]


def _data_args(recipe: str, data: dict) -> list[str]:
    folder = data["nmnist" if recipe == "nmnist-csnn" else "mnist"]
    return [] if folder is None else ["--data-dir", folder]


def train_run(recipe: str, batches: int, data: dict, out: Path, extra: list[str]) -> dict:
    """``spikeforge train`` for one epoch of ``batches`` batches; img/s from metrics.jsonl."""
    cmd = _spikeforge("train", recipe, "--epochs", "1", "--max-batches", str(batches),
                      "--out-dir", str(out), "--overwrite", "--no-progress",
                      *_data_args(recipe, data), *extra)
    # torchrun's rendezvous on the loopback address (the host name may not resolve)
    env = {**os.environ, "MASTER_ADDR": os.environ.get("MASTER_ADDR", "127.0.0.1")}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    row = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    config = json.loads((out / "config.json").read_text())
    return {"train_img_s": row["train_img_per_s"], "eval_img_s": row["test_img_per_s"],
            "threads": config.get("threads")}


def bench_run(recipe: str, data: dict) -> dict:
    """``spikeforge bench RECIPE --json`` at the recipe's defaults."""
    iters = "2" if recipe in ("csnn", "nmnist-csnn") else "20"
    cmd = _spikeforge("bench", recipe, "--iters", iters, "--json",
                      *(["--data-dir", data["mnist"]] if data["mnist"] else []))
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    out = json.loads(proc.stdout)
    return {k: out[k] for k in ("train_img_s", "eval_img_s", "threads", "firing_rates")}


def reference_framework(recipe: str) -> str:
    """The target's framework when it imports here, else ``plain-pytorch``."""
    import speed_frameworks

    name = TARGETS[recipe][0]
    try:
        speed_frameworks.MAKERS[recipe][name](*_tiny_batch(recipe))
    except ImportError:
        return "plain-pytorch"
    return name


def _tiny_batch(recipe: str):
    import torch

    if recipe == "nmnist-csnn":
        return torch.zeros(2, 2, 2, 34, 34), torch.zeros(2, dtype=torch.long), 2
    return torch.zeros(2, 1, 28, 28), torch.zeros(2, dtype=torch.long), 2


def reference_run(recipe: str, framework: str, batches: int, data: dict) -> dict:
    """The reference loop in a child process (this script's ``--reference``)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--reference", recipe, framework,
           "--batches", str(batches), *(["--data-dir", data["mnist"]] if data["mnist"] else [])]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _reference_child(recipe: str, framework: str, batches: int, data_dir: str | None) -> None:
    """Time ``batches`` training and evaluation steps of the reference loop on one real batch
    (the first MNIST training images, or the simulated N-MNIST batch ``spikeforge bench`` uses),
    after one warm-up step of each; prints img/s as JSON."""
    import speed_baselines
    import speed_frameworks
    import torch

    from spikeforge.commands import bench
    from spikeforge.data.static import load_dataset

    batch, _, steps = RECIPES[recipe]
    if recipe == "nmnist-csnn":
        x, y = bench.nmnist_batch(batch, steps, data_dir)
    else:
        mnist = load_dataset("mnist", "train", data_dir=data_dir)
        x = mnist.images[:batch].float().div(255).unsqueeze(1)
        y = mnist.labels[:batch].long()
    makers = {"plain-pytorch": speed_baselines.MAKERS[recipe], **speed_frameworks.MAKERS[recipe]}
    train, evaluate = makers[framework](x, y, steps)
    out = {"threads": torch.get_num_threads()}
    for name, fn in (("train", train), ("eval", evaluate)):
        fn()
        t0 = time.perf_counter()
        for _ in range(batches):
            fn()
        out[f"{name}_img_s"] = batch * batches / (time.perf_counter() - t0)
    print(json.dumps(out))


@contextlib.contextmanager
def load(kind: str, recipe: str, data: dict, tmp: Path):
    """Start the competing process of ``kind`` for the duration of the block."""
    if kind == "busy":
        cmd = [sys.executable, "-c", "while True: pass"]
    elif kind == "spikeforge":
        cmd = _spikeforge("train", recipe, "--epochs", "1000", "--out-dir", str(tmp / "load-run"),
                          "--overwrite", "--no-progress", *_data_args(recipe, data))
    else:
        yield
        return
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(10 if kind == "spikeforge" else 1)  # past its start-up, into its steps
    try:
        yield
    finally:
        proc.send_signal(signal.SIGINT if kind == "spikeforge" else signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def bench_recipe(recipe: str, args, data: dict, tmp: Path, log) -> dict:
    batch, default_batches, _ = RECIPES[recipe]
    batches = args.batches or default_batches
    nproc = ["--nproc", "2"] if args.load == "nproc2" else []
    framework = reference_framework(recipe)
    runs = {"spikeforge train": lambda i: train_run(recipe, batches, data, tmp / f"r{i}", nproc)}
    for k in args.thread_counts:
        runs[f"spikeforge train --threads {k}"] = lambda i, k=k: train_run(
            recipe, batches, data, tmp / f"r{i}", [*nproc, "--threads", str(k)])
    runs["spikeforge bench"] = lambda i: bench_run(recipe, data)
    if not args.no_reference:
        runs[framework] = lambda i: reference_run(recipe, framework, batches, data)
    samples: dict[str, list[dict]] = {name: [] for name in runs}
    names = list(runs)
    with load(args.load, recipe, data, tmp):
        for r in range(args.rounds):
            for i, name in enumerate(names[r % len(names):] + names[:r % len(names)]):
                samples[name].append(runs[name](i))
                log(f"  {recipe} round {r + 1}: {name}: {samples[name][-1]['train_img_s']:,.1f}"
                    " img/s")
    result = {}
    for name, rows in samples.items():
        result[name] = {
            "train_img_s": statistics.median(row["train_img_s"] for row in rows),
            "eval_img_s": statistics.median(row["eval_img_s"] for row in rows),
            "samples": rows}
    return {"batch": batch, "batches": batches, "reference": framework, "runs": result}


def simulate_nmnist(mnist_dir: str, out: Path, recordings: int) -> str:
    cmd = _spikeforge("data", "simulate-nmnist", "--mnist-dir", mnist_dir, "--out", str(out),
                      "--limit", str(recordings))
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return str(out)


def prepare_nmnist(root: str) -> None:
    """Fill the frame cache before any timed run: otherwise the first run of a round pays the
    Denoise/ToFrame of every recording inside its epoch (in the first quiet run here, the
    default-thread run did, and came out at 60 % of ``--threads 2``)."""
    cmd = _spikeforge("data", "prepare-nmnist", root, "--no-progress")
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}×" if b else "–"


def tables(results: dict) -> str:
    """One table per stored load, then what each load keeps of the quiet throughput."""
    out = []
    for kind, entry in results["loads"].items():
        isa = f", {entry['isa']}" if "isa" in entry else ""
        out += [f"**Load: {kind}** ({entry['date']}, load average {entry['load_start']:.1f} at "
                f"start{isa}). Reproduce: `{entry['command']}`.", "",
                "| recipe | run | train img/s | eval img/s | spikeforge train ÷ this (train, "
                "eval) | threads |", "|---|---|---:|---:|---:|---|"]
        for recipe, r in entry["recipes"].items():
            ours = r["runs"]["spikeforge train"]
            for name, f in r["runs"].items():
                ratio = "" if name == "spikeforge train" else (
                    f"{_ratio(ours['train_img_s'], f['train_img_s'])}, "
                    f"{_ratio(ours['eval_img_s'], f['eval_img_s'])}")
                used = sorted({str(s.get("threads")) for s in f["samples"]})
                out.append(f"| {recipe} (b={r['batch']}, {r['batches']} batches) | {name} | "
                           f"{f['train_img_s']:,.1f} | {f['eval_img_s']:,.1f} | {ratio} | "
                           f"{', '.join(used)} |")
        out.append("")
    quiet = results["loads"].get("quiet")
    if quiet:
        out += [_targets(quiet), ""]
    out += ["| load | recipe | default train img/s | ÷ quiet default | ÷ best fixed --threads |",
            "|---|---|---:|---:|---:|"]
    for kind, entry in results["loads"].items():
        for recipe, r in entry["recipes"].items():
            runs = r["runs"]
            ours = runs["spikeforge train"]["train_img_s"]
            fixed = [v["train_img_s"] for k, v in runs.items() if "--threads" in k]
            base = (quiet or {}).get("recipes", {}).get(recipe)
            keep = _ratio(ours, base["runs"]["spikeforge train"]["train_img_s"]) if base else "–"
            best = _ratio(ours, max(fixed)) if fixed else "–"
            out.append(f"| {kind} | {recipe} | {ours:,.1f} | {keep} | {best} |")
    return "\n".join(out)


def _targets(quiet: dict) -> str:
    """The quiet load against the targets: ratios over the reference, and bench's agreement."""
    lines = ["| recipe (quiet) | target | train: got | eval: got | `spikeforge bench` ÷ train "
             f"(target within {BENCH_AGREEMENT:.0%}) | met? |", "|---|---|---:|---:|---:|---|"]
    for recipe, r in quiet["recipes"].items():
        against, goal = TARGETS[recipe]
        runs = r["runs"]
        ours, bench = runs["spikeforge train"], runs["spikeforge bench"]
        agree = bench["train_img_s"] / ours["train_img_s"]
        agreed = abs(agree - 1) <= BENCH_AGREEMENT
        if r["reference"] != against or against not in runs:
            lines.append(f"| {recipe} | ≥ {goal:g}× {against} | – | – | {agree:.2f}× | "
                         f"{against} not timed |")
            continue
        tr = ours["train_img_s"] / runs[against]["train_img_s"]
        ev = ours["eval_img_s"] / runs[against]["eval_img_s"]
        met = "yes" if tr >= goal and ev >= goal and agreed else "no"
        lines.append(f"| {recipe} | ≥ {goal:g}× {against} | {tr:.2f}× | {ev:.2f}× | "
                     f"{agree:.2f}× | {met} |")
    return "\n".join(lines)


def write_results_md(results: dict, tag: str | None) -> None:
    json_path, begin, end = _names(tag)
    m = results["machine"]
    section = "\n".join([
        begin, "## Real training runs" + (f", {tag}" if tag else "")
        + " (`benchmarks/bench_train.py`)", "",
        f"{m['cpu']} ({m['machine']}), {m['cores']} CPU cores. img/s of `spikeforge train` from "
        "its own metrics.jsonl (one epoch of N batches, fresh run directory), of `spikeforge "
        "bench` from its JSON, of the reference tutorial loop over N steps on one real batch; "
        f"medians of interleaved rounds. Raw numbers: `benchmarks/{json_path.name}`.", "",
        tables(results), end])
    results_md.replace_section(begin, end, section)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batches", type=int, help="batches per run (default: per recipe, "
                   + ", ".join(f"{k} {v[1]}" for k, v in RECIPES.items()) + ")")
    p.add_argument("--load", choices=LOADS, default="quiet")
    p.add_argument("--thread-counts", type=int, nargs="*",
                   help="fixed --threads runs beside the default (default: 1 to the CPU count)")
    p.add_argument("--data-dir", help="MNIST folder")
    p.add_argument("--nmnist-dir", help="N-MNIST tree (Train/, Test/); default: simulated")
    p.add_argument("--no-reference", action="store_true",
                   help="time spikeforge only (the load targets compare it with itself; the "
                   "references' own threads collapse under load too)")
    p.add_argument("--no-write", action="store_true", help="print only; keep JSON/RESULTS.md")
    p.add_argument("--render", action="store_true", help="only rewrite RESULTS.md from JSON")
    p.add_argument("--tag", help="name of this configuration (e.g. avx2, with the instruction-set "
                   "variables of bench_speed.py set): writes train-TAG.json and its own RESULTS.md "
                   "section")
    p.add_argument("--reference", nargs=2, metavar=("RECIPE", "FRAMEWORK"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    json_path = _names(args.tag)[0]
    if args.reference:
        _reference_child(*args.reference, args.batches, args.data_dir)
        return 0
    if args.render:
        write_results_md(json.loads(json_path.read_text()), args.tag)
        return 0
    if args.thread_counts is None:
        args.thread_counts = list(range(1, len(os.sched_getaffinity(0)) + 1))

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    command = (f"{machine_info.isa_env()} python benchmarks/bench_train.py "
               + " ".join(argv or sys.argv[1:])).strip()
    entry = {"command": command, "date": str(date.today()), "load_start": os.getloadavg()[0],
             "isa": machine_info.isa(), "recipes": {}}
    with tempfile.TemporaryDirectory(prefix="bench_train-") as tmp_name:
        tmp = Path(tmp_name)
        data = {"mnist": args.data_dir, "nmnist": args.nmnist_dir}
        if "nmnist-csnn" in args.recipes and not args.nmnist_dir:
            batch, batches = RECIPES["nmnist-csnn"][0], args.batches or RECIPES["nmnist-csnn"][1]
            log(f"simulating {batch * batches} N-MNIST recordings per split")
            data["nmnist"] = simulate_nmnist(args.data_dir, tmp / "nmnist", batch * batches)
        if "nmnist-csnn" in args.recipes:
            prepare_nmnist(data["nmnist"])
        for recipe in args.recipes:
            entry["recipes"][recipe] = bench_recipe(recipe, args, data, tmp, log)
    entry["load_end"] = os.getloadavg()[0]
    results = (json.loads(json_path.read_text())
               if json_path.exists() and not args.no_write else {})
    results["machine"] = {"cpu": machine_info.cpu_model(), "machine": platform.machine(),
                          "cores": os.cpu_count()}
    stored = results.setdefault("loads", {}).get(args.load)
    if stored and set(stored["recipes"]) - set(entry["recipes"]):
        # a run of some recipes replaces theirs and keeps the others (and the command of those)
        entry["recipes"] = {**stored["recipes"], **entry["recipes"]}
        entry["command"] = f"{stored['command']}; then {entry['command']}"
    results["loads"][args.load] = entry
    print(tables({**results, "loads": {args.load: entry}}))
    if not args.no_write:
        json_path.write_text(json.dumps(results, indent=1) + "\n")
        write_results_md(results, args.tag)
    return 0


if __name__ == "__main__":
    sys.exit(main())
