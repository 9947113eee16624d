"""The CUDA path on a real GPU, in one run: tests, LIF kernel timing, recipe training steps.

    python3 benchmarks/gpu_check.py [--out DIR] [--budget SECONDS] [--results-md]

For a session that is lent a CUDA GPU for a few minutes. It installs nothing: it needs what
``.ci/run`` installs (torch with CUDA, triton; SpikingJelly is timed where it imports). Each part
runs in a child process (a crash or hang costs that part only) with ``TRITON_INTERPRET`` unset,
so the Triton kernels compile and run on the GPU. Parts, in order, each skipped once
``--budget`` seconds (default 480) are spent:

1. ``tests``: the Triton test files and the kernel, model and training-step tests, on CUDA
   (tests/conftest.py leaves the interpreter off where a GPU is present).
2. ``lif``: one LIF layer (τ = 2, hard reset, ATan) over x [T=32, B=64, 65,536 neurons],
   forward + backward, median of CUDA-event timings: spikeforge's Triton kernel, the plain
   per-step torch loop (``kernels.reference``), and SpikingJelly's CUDA, Triton and torch
   implementations (``SJ_LIF_CUDA_IMPLEMENTATION``) where it imports.
3. ``recipes``: ``spikeforge bench RECIPE --device cuda --json`` for each recipe (its default
   batch and T; the first step includes Triton's compilation, the timed ones do not).

Writes ``gpu_check.json`` to ``--out`` (default ``$OUT``, else the current folder) after every
part, so a run cut short keeps what it measured; ``--results-md`` also writes the figures as the
"GPU" section of benchmarks/RESULTS.md with the GPU's name.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEST_FILES = ("tests/test_kernels_triton.py", "tests/test_kernels_triton_pool.py",
              "tests/test_kernels_triton_poisson.py",
              "tests/test_train_triton.py", "tests/test_kernels.py", "tests/test_models.py",
              "tests/test_kernels_bench_cli.py")
RECIPES = ("fc-lif", "csnn", "nmnist-csnn", "rleaky")
#: The LIF timing's input [T, B, N].
LIF_SHAPE = (32, 64, 65536)
LIF_IMPLEMENTATIONS = ("spikeforge-triton", "torch-loop", "spikingjelly-cuda",
                       "spikingjelly-triton", "spikingjelly-torch")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "src"), env.get("PYTHONPATH"))
                                        if p)
    return {**env, **extra}


def _child(argv: list[str], timeout: float, **env: str) -> dict:
    """Run ``argv`` in the repository root: rc, seconds, stdout, and the output's tail."""
    t0 = time.perf_counter()
    try:
        done = subprocess.run(argv, cwd=ROOT, env=_env(**env), capture_output=True, text=True,
                              timeout=max(timeout, 1))
        rc, out, err = done.returncode, done.stdout, done.stderr
    except subprocess.TimeoutExpired as exc:
        rc, out, err = "timeout", exc.stdout or "", exc.stderr or ""
        out, err = (s.decode() if isinstance(s, bytes) else s for s in (out, err))
    return {"rc": rc, "seconds": round(time.perf_counter() - t0, 1), "stdout": out,
            "tail": (out + err)[-3000:]}


def time_lif(name: str, iters: int = 10) -> dict:
    """Forward + backward of one LIF layer over LIF_SHAPE on CUDA with implementation ``name``:
    median and min milliseconds over ``iters`` runs after two warm-ups, peak GPU memory."""
    import torch

    from spikeforge.kernels import reference
    from spikeforge.surrogate import ATan

    steps, batch, n = LIF_SHAPE
    gen = torch.Generator("cuda").manual_seed(0)
    x = (torch.randn(LIF_SHAPE, device="cuda", generator=gen) + 0.6).requires_grad_()
    v0 = torch.zeros(batch, n, device="cuda")
    if name == "spikeforge-triton":
        from spikeforge.kernels import triton_gpu

        def run():
            return triton_gpu.if_lif(x, v0, 2.0, True, 1.0, 0.0, ATan(), False)[0]
    elif name == "torch-loop":
        def run():
            return reference.if_lif(x, v0, 2.0, True, 1.0, 0.0, ATan(), False)[0]
    else:
        from spikingjelly.activation_based import functional, neuron, surrogate

        node = neuron.LIFNode(tau=2.0, surrogate_function=surrogate.ATan(), step_mode="m")

        def run():
            functional.reset_net(node)
            return node(x)
    times = []
    for i in range(iters + 2):
        x.grad = None
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        run().sum().backward()
        end.record()
        torch.cuda.synchronize()
        if i >= 2:
            times.append(start.elapsed_time(end))
    times.sort()
    return {"ms_median": times[len(times) // 2], "ms_min": times[0],
            "peak_cuda_mib": torch.cuda.max_memory_allocated() / 2**20}


def _lif_child(name: str, timeout: float) -> dict:
    env = {}
    if name.startswith("spikingjelly-"):
        env["SJ_LIF_CUDA_IMPLEMENTATION"] = name.split("-", 1)[1]
    done = _child([sys.executable, __file__, "--lif", name], timeout, **env)
    if done["rc"] == 0:
        return {**json.loads(done["stdout"].strip().splitlines()[-1]), "rc": 0}
    return {"rc": done["rc"], "tail": done["tail"]}


def environment() -> dict:
    import torch

    info = {"python": sys.version.split()[0], "torch": torch.__version__,
            "cuda_available": torch.cuda.is_available(), "torch_cuda": torch.version.cuda}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    for package in ("triton", "spikingjelly"):
        try:
            info[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            info[package] = "not installed"
    return info


def results_section(result: dict) -> str:
    """The "GPU" section of RESULTS.md from a finished ``result``."""
    env = result["environment"]
    lines = ["<!-- gpu_check:begin -->",
             f"## GPU (`benchmarks/gpu_check.py`, {env.get('gpu', 'no GPU')})", "",
             f"torch {env['torch']} (CUDA {env['torch_cuda']}), triton {env['triton']}, "
             f"spikingjelly {env['spikingjelly']}.", ""]
    tests = result.get("tests")
    if tests:
        lines += [f"Tests on the GPU: rc {tests['rc']}, {tests['summary']}.", ""]
    lif = result.get("lif")
    if lif:
        lines += [f"LIF forward + backward, x [{', '.join(map(str, LIF_SHAPE))}], median of 10:",
                  "", "| implementation | ms | peak GPU MiB |", "|---|---:|---:|"]
        for name, r in lif.items():
            lines.append(f"| {name} | {r['ms_median']:.2f} | {r['peak_cuda_mib']:.0f} |"
                         if r.get("rc") == 0 else f"| {name} | failed ({r['rc']}) | |")
        lines.append("")
    recipes = result.get("recipes")
    if recipes:
        lines += ["Recipe steps (`spikeforge bench RECIPE --device cuda`, default batch and T):",
                  "", "| recipe | batch | T | train img/s | eval img/s | peak GPU MiB |",
                  "|---|---:|---:|---:|---:|---:|"]
        for name, r in recipes.items():
            lines.append(f"| {name} | {r['batch']} | {r['T']} | {r['train_img_s']:.0f} | "
                         f"{r['eval_img_s']:.0f} | {r['peak_cuda_mib']:.0f} |"
                         if r.get("rc") == 0 else f"| {name} | failed ({r['rc']}) | | | | |")
    return "\n".join(lines) + "\n<!-- gpu_check:end -->"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=os.environ.get("OUT", "."),
                        help="folder for gpu_check.json (default $OUT, else .)")
    parser.add_argument("--budget", type=float, default=480.0,
                        help="seconds after which the remaining parts are skipped (480)")
    parser.add_argument("--results-md", action="store_true",
                        help="also write the figures into benchmarks/RESULTS.md")
    parser.add_argument("--lif", choices=LIF_IMPLEMENTATIONS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.lif:  # child process of part 2
        print(json.dumps(time_lif(args.lif)))
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    deadline = time.perf_counter() + args.budget
    result: dict = {"environment": environment()}

    def left() -> float:
        return deadline - time.perf_counter()

    def save() -> None:
        (out / "gpu_check.json").write_text(json.dumps(result, indent=2) + "\n")

    save()
    if not result["environment"]["cuda_available"]:
        print("no CUDA device here: nothing to check", file=sys.stderr)
        return 1
    tests = _child([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                    *TEST_FILES], min(left(), 300))
    summary = tests["tail"].strip().splitlines()[-1] if tests["tail"].strip() else ""
    result["tests"] = {"rc": tests["rc"], "seconds": tests["seconds"], "summary": summary,
                       "tail": tests["tail"]}
    save()
    result["lif"] = {}
    for name in LIF_IMPLEMENTATIONS:
        result["lif"][name] = (_lif_child(name, min(left(), 90)) if left() > 10
                               else {"rc": "skipped: out of time"})
        save()
    result["recipes"] = {}
    for recipe in RECIPES:
        if left() <= 10:
            result["recipes"][recipe] = {"rc": "skipped: out of time"}
            continue
        done = _child([sys.executable, "-m", "spikeforge", "bench", recipe, "--device", "cuda",
                       "--iters", "5", "--json"], min(left(), 150))
        result["recipes"][recipe] = ({**json.loads(done["stdout"]), "rc": 0}
                                     if done["rc"] == 0 else {"rc": done["rc"],
                                                              "tail": done["tail"]})
        save()
    if args.results_md:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from results_md import replace_section

        replace_section("<!-- gpu_check:begin -->", "<!-- gpu_check:end -->",
                        results_section(result))
    print(json.dumps({k: v for k, v in result.items() if k != "tests"}, indent=2))
    print(f"tests: {result['tests']['summary']}")
    return 0 if result["tests"]["rc"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
