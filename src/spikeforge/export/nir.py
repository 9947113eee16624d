"""Export a spikeforge network to a NIR graph, exactly or with every approximation reported.

``to_nir(model, input_shape, dt)`` walks the layers in execution order (:mod:`.chain`) and
writes one node per layer, Input → ... → Output, shapes without the T and B axes:

    nn.Linear            Linear (no bias) or Affine
    nn.Conv2d [+ BN2d]   Conv2d; a following BatchNorm2d is folded in with its running statistics:
                         W' = W·γ/√(σ²+ε),  b' = (b − μ)·γ/√(σ²+ε) + β
    nn.AvgPool2d         AvgPool2d;  nn.Flatten → Flatten (start/end without the batch axis)
    IF, LIF, Leaky       IF / LIF (see :mod:`.neurons` for dt, τ, r and thresholds: an
                         IF/LIF's v_threshold is one float32 step below V_th)
    RLeaky               a subgraph input → LIF ⇄ recurrent weights → output   (approximate)
    nn.MaxPool2d         SumPool2d after spikes, AvgPool2d otherwise            (approximate)

What NIR cannot express exactly is refused with a :class:`NotExportableError` naming each layer,
unless ``approximate=True``: then the nearest node is written and the change is recorded in the
returned :class:`ExportReport`. Every weight is written unchanged (or folded, for BatchNorm).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import nir
import numpy as np
import torch
from torch import nn

from .. import __version__
from ..neuron import LIF, SpikingNeuron
from .chain import layers
from .errors import NotExportableError
from .neurons import _weights, export_neuron
from .report import Approximation, ExportReport

DEFAULT_DT = 1e-4
"""Seconds per step: snnTorch's and SpikingJelly's NIR exchange assume the same."""

_TIE_NOTE = ("IF/LIF fire when the membrane reaches V_th (H >= V_th) and NIR when it is above "
             "v_threshold, so v_threshold is written one float32 step below V_th (1.0 -> "
             "0.99999994): the same spikes for every float32 membrane; a float64 simulation can "
             "differ only for a membrane strictly between the two values")


def _key(name: str, taken: dict) -> str:
    key = name.replace(".", "_")
    if key[0].isdigit() or key in ("input", "output"):
        key = f"layer_{key}"
    while key in taken:
        key += "_"
    return key


def _pair(v) -> np.ndarray:
    return np.array([v, v] if isinstance(v, int) else list(v), dtype=np.int64)


def fold_batchnorm(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[np.ndarray, np.ndarray]:
    """(weight, bias) of ``conv`` followed by ``bn`` in inference mode, computed in float64."""
    scale = (bn.weight.detach().double() if bn.affine else torch.ones_like(bn.running_var.double())
             ) / torch.sqrt(bn.running_var.detach().double() + bn.eps)
    shift = bn.bias.detach().double() if bn.affine else torch.zeros_like(scale)
    bias = conv.bias.detach().double() if conv.bias is not None else torch.zeros_like(scale)
    weight = conv.weight.detach().double() * scale.view(-1, 1, 1, 1)
    bias = (bias - bn.running_mean.detach().double()) * scale + shift
    dtype = conv.weight.dtype
    return _weights(weight.to(dtype)), _weights(bias.to(dtype))


class _Exporter:
    def __init__(self, input_shape: tuple[int, ...], dt: float) -> None:
        self.dt = dt
        self.shape = input_shape
        self.binary = False  # whether the current signal is made of spikes
        self.nodes: dict[str, nir.NIRNode] = {"input": nir.Input(input_type=np.array(input_shape))}
        self.edges: list[tuple[str, str]] = []
        self.last = "input"
        self.key = ""  # the node being written
        self.report = ExportReport(dt=dt, input_shape=input_shape)

    def add(self, name: str, module: nn.Module, node: nir.NIRNode, shape) -> None:
        key = self.key
        self.nodes[key] = node
        self.edges.append((self.last, key))
        self.report.nodes[key] = f"{name} ({type(module).__name__})"
        self.last, self.shape = key, tuple(int(s) for s in shape)

    def refuse(self, name: str, module: nn.Module, why: str) -> NotExportableError:
        return NotExportableError(f"layer '{name}' ({type(module).__name__}) cannot be exported "
                                  f"to NIR: {why}")

    def out_shape(self, module: nn.Module) -> tuple[int, ...]:
        p = next(module.parameters(), None)
        like = p if p is not None else torch.zeros(())
        with torch.no_grad():
            x = torch.zeros(1, *self.shape, dtype=like.dtype, device=like.device)
            return tuple(module(x).shape[1:])

    def layer(self, name: str, module: nn.Module,
              bn: tuple[str, nn.BatchNorm2d] | None) -> None:
        self.key = _key(name, self.nodes)
        if isinstance(module, SpikingNeuron):
            node = export_neuron(module, self.shape, self.dt, name, self.key,
                                 self.report.approximations)
            if isinstance(module, LIF) and _TIE_NOTE not in self.report.notes:
                self.report.notes.append(_TIE_NOTE)
            self.add(name, module, node, self.shape)
            self.binary = getattr(module, "output", "spikes") == "spikes"
            return
        if isinstance(module, nn.Linear):
            if len(self.shape) != 1:
                raise self.refuse(name, module, f"it acts on the last axis of a {list(self.shape)}"
                                  " input, but NIR's Linear/Affine take a vector; flatten first")
            node = (nir.Linear(weight=_weights(module.weight)) if module.bias is None else
                    nir.Affine(weight=_weights(module.weight), bias=_weights(module.bias)))
        elif isinstance(module, nn.Conv2d):
            node = self.conv(name, module, bn)
        elif isinstance(module, nn.AvgPool2d):
            if module.ceil_mode or module.divisor_override is not None or (
                    not module.count_include_pad and np.any(_pair(module.padding))):
                raise self.refuse(name, module, "NIR's AvgPool2d has no ceil_mode, "
                                  "divisor_override or count_include_pad=False")
            node = nir.AvgPool2d(kernel_size=_pair(module.kernel_size),
                                 stride=_pair(module.stride), padding=_pair(module.padding))
        elif isinstance(module, nn.MaxPool2d):
            node = self.maxpool(name, module)
        elif isinstance(module, nn.Flatten):
            node = self.flatten(name, module)
        else:
            raise self.refuse(name, module, "NIR has no equivalent layer")
        binary = self.binary and isinstance(module, (nn.Flatten, nn.MaxPool2d))
        self.add(name, module, node, self.out_shape(module))
        self.binary = binary

    def conv(self, name: str, module: nn.Conv2d,
             bn: tuple[str, nn.BatchNorm2d] | None) -> nir.Conv2d:
        if module.padding_mode != "zeros" or len(self.shape) != 3:
            raise self.refuse(name, module, "NIR's Conv2d pads with zeros and takes [C, H, W]")
        if bn is None:
            weight = _weights(module.weight)
            bias = (_weights(module.bias) if module.bias is not None
                    else np.zeros(weight.shape[0], dtype=weight.dtype))
        else:
            bn_name, bn_module = bn
            if not bn_module.track_running_stats or bn_module.running_var is None:
                raise self.refuse(bn_name, bn_module, "it has no running statistics to fold "
                                  "into the convolution")
            weight, bias = fold_batchnorm(module, bn_module)
            self.report.notes.append(
                f"BatchNorm '{bn_name}' folded into convolution '{name}' with its running "
                "statistics (inference mode): W' = W*g/sqrt(var+eps), b' = (b-mean)*g/"
                "sqrt(var+eps) + beta")
        return nir.Conv2d(input_shape=self.shape[1:], weight=weight, stride=module.stride,
                          padding=module.padding, dilation=module.dilation,
                          groups=module.groups, bias=bias)

    def maxpool(self, name: str, module: nn.MaxPool2d) -> nir.NIRNode:
        if module.ceil_mode or module.return_indices or np.any(_pair(module.dilation) != 1):
            raise self.refuse(name, module, "NIR has no max pooling, nor a near node for "
                              "ceil_mode, dilation or return_indices")
        stride = module.stride if module.stride is not None else module.kernel_size
        args = dict(kernel_size=_pair(module.kernel_size), stride=_pair(stride),
                    padding=_pair(module.padding))
        if self.binary:
            node: nir.NIRNode = nir.SumPool2d(**args)
            detail = ("NIR has no max pooling; the nearest node is SumPool2d, which equals the "
                      "max of binary spikes only when at most one spike falls in each window")
        else:
            node = nir.AvgPool2d(**args)
            detail = ("NIR has no max pooling; the nearest node is AvgPool2d (the window mean "
                      "instead of the window maximum)")
        self.report.approximations.append(
            Approximation(name, self.key, "max-pool", type(node).__name__, detail))
        return node

    def flatten(self, name: str, module: nn.Flatten) -> nir.Flatten:
        rank = len(self.shape) + 1  # with the batch axis
        start, end = module.start_dim % rank, module.end_dim % rank
        if start < 1:
            raise self.refuse(name, module, "it flattens the batch axis")
        return nir.Flatten(input_type={"input": np.array(self.shape)}, start_dim=start - 1,
                           end_dim=-1 if end == rank - 1 else end - 1)

    def graph(self) -> nir.NIRGraph:
        self.edges.append((self.last, "output"))
        nodes = dict(self.nodes, output=nir.Output(output_type=np.array(self.shape)))
        return nir.NIRGraph(nodes=nodes, edges=self.edges,
                            metadata={"producer": f"spikeforge {__version__}", "dt": self.dt})


def to_nir(model: nn.Module, input_shape: Sequence[int], dt: float = DEFAULT_DT,
           approximate: bool = False) -> tuple[nir.NIRGraph, ExportReport]:
    """The NIR graph of ``model`` and the report of the export.

    ``input_shape``: one sample at one step, without T and B (``(1, 28, 28)`` for MNIST).
    ``dt``: seconds per network step; time constants are written in seconds (τ·dt).
    ``approximate``: write the nearest node where NIR has no exact one, instead of raising
    :class:`NotExportableError`; each change is listed in ``report.approximations``.
    """
    if not (isinstance(dt, (int, float)) and math.isfinite(dt) and dt > 0):
        raise ValueError(f"dt must be a positive number of seconds, got {dt!r}")
    shape = tuple(int(s) for s in input_shape)
    if not shape or any(s < 1 for s in shape):
        raise ValueError(f"input_shape must be positive sizes without T and B, got {input_shape}")
    exporter = _Exporter(shape, float(dt))
    chain = layers(model)
    i = 0
    while i < len(chain):
        name, module = chain[i]
        bn = None
        if isinstance(module, nn.Conv2d) and i + 1 < len(chain) \
                and isinstance(chain[i + 1][1], nn.BatchNorm2d):
            bn = chain[i + 1]
            i += 1
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            raise exporter.refuse(name, module, "BatchNorm is folded into a directly preceding "
                                  "Conv2d, and there is none")
        exporter.layer(name, module, bn)
        i += 1
    report = exporter.report
    report.notes.insert(0, f"one network step is one forward-Euler step of dt = {dt:g} s; "
                           "time constants are written in seconds")
    if not report.exact and not approximate:
        reasons = "; ".join(f"layer '{a.layer}': {a.detail}" for a in report.approximations)
        raise NotExportableError(
            f"the network has no exact NIR form ({reasons}); rerun with --approximate "
            "(approximate=True in Python) to export the nearest NIR nodes with a report of "
            "each change")
    return exporter.graph(), report
