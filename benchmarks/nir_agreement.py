"""Does a run's NIR export fire the spikes the run fires? Counted on real test images.

    python benchmarks/nir_agreement.py RUN_DIR --data-dir DIR [--limit N] [--clients-limit M]
                                       [--clients snnTorch,Norse,SpikingJelly]

Exports the run's best checkpoint with :func:`spikeforge.export.to_nir` (exact exports only),
writes the file and reads it back, and feeds the network and each reader the same input: the
run's own encoding of the first N test images (Poisson spikes from a fixed generator for fc-lif,
the image repeated T times for csnn). A reader agrees on an image when its output spike train
``[T, 10]`` equals the network's bit for bit. Readers: :func:`spikeforge.export.from_nir` on all
N images (batched); the installed clients on the first M (snnTorch and Norse one sample at a
time, as their importers need; SpikingJelly batched). Prints one line per reader.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import nir
import torch

from spikeforge import encoding
from spikeforge import functional as SF
from spikeforge.commands.export import _input_shape
from spikeforge.data import load_dataset
from spikeforge.export import from_nir, to_nir
from spikeforge.train.run import load_run

DT = 1e-4


def _inputs(loaded, images: torch.Tensor, seed: int) -> torch.Tensor:
    """The model's input ``[T, B, ...]`` for ``images`` [B, 1, 28, 28], as the run encodes."""
    task = loaded.task
    if task.encoding == "poisson":
        return encoding.poisson(images, task.steps, generator=torch.Generator().manual_seed(seed))
    return images.unsqueeze(0).expand(task.steps, *images.shape)


def _stateful(module, x_seq: torch.Tensor) -> torch.Tensor:
    state, out = None, []
    for x in x_seq:
        y, state = module(x, state)
        out.append(y)
    return torch.stack(out)


def _clients(path: Path) -> dict:
    """name -> function(x [T, B, ...]) -> spikes [T, B, 10], for each installed client."""
    found = {}
    try:
        import snntorch.utils
        from snntorch.import_nir import import_from_nir

        def snn(x):
            net = import_from_nir(nir.read(path))
            out = []
            for b in range(x.shape[1]):
                snntorch.utils.reset(net)
                out.append(torch.stack([net(x[t, b])[0] for t in range(len(x))]))
            return torch.stack(out, 1)

        found["snnTorch"] = snn
    except ImportError:
        pass
    try:
        import norse.torch as norse

        found["Norse"] = lambda x: torch.stack(
            [_stateful(norse.from_nir(nir.read(path), dt=DT), x[:, b]) for b in range(x.shape[1])],
            1)
    except ImportError:
        pass
    try:
        from spikingjelly.activation_based import nir_exchange

        found["SpikingJelly"] = lambda x: _stateful(nir_exchange.import_from_nir(path, dt=DT), x)
    except ImportError:
        pass
    return found


def _agree(want: torch.Tensor, got: torch.Tensor) -> int:
    """Images (axis 1) whose spike trains are equal bit for bit."""
    got = got.reshape(want.shape).to(want.dtype)
    return int((got == want).flatten(2).all(2).all(0).sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir")
    parser.add_argument("--data-dir", required=True, help="folder with the run's test set")
    parser.add_argument("--limit", type=int, default=10000, help="test images for from_nir")
    parser.add_argument("--clients-limit", type=int, default=100, help="test images per client")
    parser.add_argument("--clients", default="snnTorch,Norse,SpikingJelly",
                        help="which installed clients to check (snnTorch reads IF as a Leaky, "
                             "so leave it out for IF networks)")
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args()

    loaded = load_run(args.run_dir)
    model = loaded.model.eval()
    graph, report = to_nir(model, _input_shape(model, None), dt=DT)
    folder = Path(tempfile.mkdtemp(prefix="nir-agreement-"))
    path = folder / "net.nir"
    nir.write(path, graph)
    rebuilt = from_nir(path).eval()
    test = load_dataset(loaded.train_config.dataset, "test", data_dir=args.data_dir,
                        download=False)
    readers = {"from_nir": (rebuilt, args.limit), **{
        name: (fn, args.clients_limit) for name, fn in _clients(path).items()
        if name in args.clients.split(",")}}
    counts = {name: [0, 0] for name in readers}
    n, spikes = min(args.limit, len(test)), 0.0
    with torch.no_grad():
        for start in range(0, n, args.batch):
            images = test.images[start:start + args.batch].unsqueeze(1).float() / 255
            x = _inputs(loaded, images, seed=start)
            SF.reset(model)
            want = model(x)
            spikes += float(want.sum())
            for name, (reader, limit) in readers.items():
                k = min(len(images), limit - start)
                if k <= 0:
                    continue
                if isinstance(reader, torch.nn.Module):
                    SF.reset(reader)
                got = reader(x[:, :k])
                counts[name][0] += _agree(want[:, :k], got)
                counts[name][1] += k
    rate = spikes / (n * want.shape[0] * want.shape[-1])
    for name, (same, total) in counts.items():
        print(f"{loaded.recipe} {args.run_dir}: {name} gives identical output spikes on "
              f"{same} of {total} test images (output firing rate {rate:.3f})")
    print(json.dumps({"run": str(args.run_dir), "exact": report.exact, "rate": rate, **{
        name: {"identical": same, "checked": total} for name, (same, total) in counts.items()}}))


if __name__ == "__main__":
    main()
