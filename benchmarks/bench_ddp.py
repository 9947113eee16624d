"""Training throughput with 1 and 2 DDP processes (torchrun, gloo) on this machine.

    python benchmarks/bench_ddp.py [--mnist-dir D] [--batches N]

Runs ``spikeforge train RECIPE --epochs 1 --max-batches N`` on the real MNIST once per process
count, with the same global batch (``-b`` is per process, so 2 processes use half of it each),
and reads ``train_img_per_s`` of the run's ``metrics.csv``. Writes ``benchmarks/ddp.json`` and
the DDP section of ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import results_md  # noqa: E402

BEGIN, END = "<!-- ddp:begin -->", "<!-- ddp:end -->"
RECIPES = {"fc-lif": ("-T", "100", 64), "csnn": ("-T", "4", 128)}


def _throughput(recipe: str, nproc: int, mnist: Path, batches: int, tmp: Path) -> float:
    flag, steps, batch = RECIPES[recipe]
    out = tmp / f"{recipe}-{nproc}"
    cmd = [sys.executable, "-m", "spikeforge", "train", recipe, flag, steps,
           "-b", str(batch // nproc), "--epochs", "1", "--max-batches", str(batches * nproc),
           "--data-dir", str(mnist), "--out-dir", str(out), "--no-progress"]
    if nproc > 1:
        cmd[cmd.index("--max-batches") + 1] = str(batches)
        cmd += ["--nproc", str(nproc)]
    threads = str(max(1, (os.cpu_count() or 1) // nproc))
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MASTER_ADDR": "127.0.0.1"}
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    with open(out / "metrics.csv") as f:
        return float(next(csv.DictReader(f))["train_img_per_s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mnist-dir", default=str(HERE.parent.parent / "shared/data/mnist"))
    parser.add_argument("--batches", type=int, default=40, help="global batches timed per run")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for recipe in RECIPES:
            one = _throughput(recipe, 1, Path(args.mnist_dir), args.batches, Path(tmp))
            two = _throughput(recipe, 2, Path(args.mnist_dir), args.batches, Path(tmp))
            rows.append({"recipe": recipe, "img_per_s_1proc": one, "img_per_s_2proc": two,
                         "speedup": two / one})
    result = {"machine": f"{platform.processor() or platform.machine()}, "
                         f"{os.cpu_count()} cores", "date": time.strftime("%Y-%m-%d"),
              "global_batch": {r: b for r, (_, _, b) in RECIPES.items()}, "rows": rows}
    (HERE / "ddp.json").write_text(json.dumps(result, indent=2) + "\n")
    table = ["| recipe | 1 process img/s | 2 processes img/s | ratio |", "|---|---|---|---|"]
    table += [f"| {r['recipe']} | {r['img_per_s_1proc']:.0f} | {r['img_per_s_2proc']:.0f} | "
              f"{r['speedup']:.2f}× |" for r in rows]
    section = "\n".join([
        BEGIN, "## Distributed training (DDP, gloo, one machine)", "",
        f"{result['machine']}, {result['date']}; same global batch (fc-lif 64, csnn 128), "
        f"{args.batches} global batches each; OMP threads split between the processes.", "",
        *table, "",
        "Reproduce: `python benchmarks/bench_ddp.py`. With 2 cores, 2 processes mostly trade "
        "intra-op threads for processes and add a gradient all-reduce per step; the point is "
        "that it works and what it costs, not a gain.", END])
    results_md.replace_section(BEGIN, END, section)
    print(section)


if __name__ == "__main__":
    main()
