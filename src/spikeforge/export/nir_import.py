"""Read a NIR graph back as a spikeforge network that runs on ``[T, B, ...]``.

The graph must be a chain from its Input to its Output; a node may loop through one weight node
back to itself (a recurrent neuron), either directly or inside a subgraph as snnTorch and
:func:`spikeforge.export.to_nir` write it. Nodes map to:

    Linear / Affine → nn.Linear        Conv2d → nn.Conv2d        Flatten → nn.Flatten (+1 axis)
    AvgPool2d → nn.AvgPool2d           SumPool2d → nn.AvgPool2d(divisor_override=1)
    Scale → Scale                      IF / LIF → IF, LIF or Leaky (:func:`.neurons.import_neuron`)
    neuron ⇄ W → Recurrent(neuron, W): S[t] = neuron(X[t] + W(S[t−1]))

Stateless layers are wrapped in :class:`~spikeforge.layer.SeqToBatch` by
:func:`spikeforge.layer.seq`; ``spikeforge.functional.reset`` clears every state.
"""

from __future__ import annotations

from pathlib import Path

import nir
import numpy as np
import torch
from torch import nn

from ..errors import DataError
from ..layer import seq
from .errors import NIRError
from .modules import Recurrent, Scale
from .neurons import import_neuron
from .nir import DEFAULT_DT

_NEURONS = (nir.IF, nir.LIF)


def _tensor(a) -> torch.Tensor:
    return torch.from_numpy(np.array(a, copy=True))


def _ints(v) -> tuple[int, ...] | str:
    if isinstance(v, (str, bytes)):
        return v.decode() if isinstance(v, bytes) else v
    return tuple(int(x) for x in np.atleast_1d(v))


def _linear(node: nir.Linear | nir.Affine, key: str) -> nn.Linear:
    weight = np.asarray(node.weight)
    if weight.ndim != 2:
        raise NIRError(f"NIR node '{key}': a {weight.ndim}-D weight; spikeforge reads 2-D ones")
    bias = getattr(node, "bias", None)
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    layer.weight.data = _tensor(weight)
    if bias is not None:
        layer.bias.data = _tensor(np.broadcast_to(bias, weight.shape[:1]))
    return layer


def _conv2d(node: nir.Conv2d) -> nn.Conv2d:
    weight = np.asarray(node.weight)
    has_bias = bool(np.any(node.bias))
    layer = nn.Conv2d(weight.shape[1] * int(node.groups), weight.shape[0], weight.shape[2:],
                      stride=_ints(node.stride), padding=_ints(node.padding),
                      dilation=_ints(node.dilation), groups=int(node.groups), bias=has_bias)
    layer.weight.data = _tensor(weight)
    if has_bias:
        layer.bias.data = _tensor(np.broadcast_to(node.bias, weight.shape[:1]))
    return layer


def _flatten(node: nir.Flatten) -> nn.Flatten:
    def shift(d: int) -> int:
        return int(d) + 1 if int(d) >= 0 else int(d)

    return nn.Flatten(shift(node.start_dim), shift(node.end_dim))


def _pool(node: nir.AvgPool2d | nir.SumPool2d) -> nn.AvgPool2d:
    return nn.AvgPool2d(_ints(node.kernel_size), _ints(node.stride), _ints(node.padding),
                        divisor_override=1 if isinstance(node, nir.SumPool2d) else None)


def _module(node: nir.NIRNode, key: str, dt: float, dtype: torch.dtype
            ) -> nn.Module | list[nn.Module]:
    if isinstance(node, (nir.Linear, nir.Affine)):
        return _linear(node, key)
    if isinstance(node, nir.Conv2d):
        return _conv2d(node)
    if isinstance(node, nir.Flatten):
        return _flatten(node)
    if isinstance(node, (nir.AvgPool2d, nir.SumPool2d)):
        return _pool(node)
    if isinstance(node, nir.Scale):
        return Scale(_tensor(node.scale))
    if isinstance(node, _NEURONS):
        return import_neuron(node, dt, key, dtype)
    if isinstance(node, nir.NIRGraph):
        modules = _graph(node, dt, f"'{key}'", dtype)
        return modules[0] if len(modules) == 1 else modules
    raise NIRError(f"NIR node '{key}' is a {type(node).__name__}, which spikeforge cannot "
                   "build yet (supported: Linear, Affine, Conv2d, Flatten, AvgPool2d, SumPool2d, "
                   "Scale, IF, LIF and recurrent subgraphs)")


def _graph(graph: nir.NIRGraph, dt: float, where: str, dtype: torch.dtype) -> list[nn.Module]:
    """The modules of ``graph`` in order: a chain, each neuron with an optional feedback loop."""
    succ: dict[str, list[str]] = {k: [] for k in graph.nodes}
    pred: dict[str, list[str]] = {k: [] for k in graph.nodes}
    for a, b in graph.edges:
        succ[a].append(b)
        pred[b].append(a)
    inputs = [k for k, n in graph.nodes.items() if isinstance(n, nir.Input)]
    if len(inputs) != 1:
        raise NIRError(f"NIR graph {where}: {len(inputs)} Input nodes; spikeforge reads graphs "
                       "with exactly one input")

    def loop_partner(key: str) -> str | None:
        for w in succ[key]:
            if succ[w] == [key] and pred[w] == [key] and not isinstance(graph.nodes[w], nir.Output):
                return w
        return None

    modules: list[nn.Module] = []
    key, seen = inputs[0], {inputs[0]}
    while not isinstance(graph.nodes[key], nir.Output):
        partner = loop_partner(key)
        nexts = [k for k in succ[key] if k != partner]
        if len(nexts) != 1:
            raise NIRError(f"NIR graph {where}: node '{key}' feeds {len(nexts)} nodes; "
                           "spikeforge reads chains (with recurrent neurons) only")
        node = graph.nodes[key]
        if not isinstance(node, nir.Input):
            module = _module(node, key, dt, dtype)
            if partner is not None:
                recurrent = _module(graph.nodes[partner], partner, dt, dtype)
                if not isinstance(node, _NEURONS) or isinstance(recurrent, list):
                    raise NIRError(f"NIR graph {where}: the loop through '{key}' and '{partner}'"
                                   " needs a neuron on one side and a weight on the other")
                module = Recurrent(module, recurrent)
                seen.add(partner)
            modules += module if isinstance(module, list) else [module]
        key = nexts[0]
        if key in seen or len([p for p in pred[key] if p != loop_partner(key)]) != 1:
            raise NIRError(f"NIR graph {where}: node '{key}' joins several inputs; spikeforge "
                           "reads chains (with recurrent neurons) only")
        seen.add(key)
    return modules


def from_nir(graph: nir.NIRGraph | str | Path, dt: float | None = None,
             dtype: torch.dtype = torch.float32) -> nn.Module:
    """A spikeforge network computing ``graph`` (a NIRGraph or a ``.nir`` file) step by step.

    ``dt``: seconds per step; by default the ``dt`` the graph's metadata records (spikeforge
    writes it), else 1e-4 s, the step snnTorch and SpikingJelly assume. The result takes
    ``[T, B, *input_shape]`` and returns the spikes (or values) of the last node.
    ``dtype``: the network's dtype; a foreign IF/LIF fires when its membrane in that dtype is
    above v_threshold, as NIR defines (see :func:`.neurons.import_neuron`).
    """
    if isinstance(graph, (str, Path)):
        path = Path(graph)
        if not path.is_file():
            what = "is a folder, not a file" if path.is_dir() else "does not exist"
            raise DataError(f"NIR file {path} {what}; pass the path of a .nir file")
        try:
            graph = nir.read(path)
        except Exception as err:  # h5py and nir raise many types for a foreign file
            raise DataError(f"{path} is not a readable NIR file ({err}); re-export it with "
                            "nir.write or spikeforge export") from None
    if dt is None:
        dt = float((graph.metadata or {}).get("dt", DEFAULT_DT))
    if not dt > 0:
        raise ValueError(f"dt must be a positive number of seconds, got {dt}")
    return seq(*_graph(graph, dt, "at the top level", dtype)).to(dtype)
