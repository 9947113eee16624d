"""A network as the ordered list of layers its ``forward`` runs, which is what becomes a graph.

Followed: ``nn.Sequential`` (and :func:`spikeforge.layer.seq`), :class:`~spikeforge.layer.
SeqToBatch` (a layer run over time is the same layer at every step) and the recipe models, whose
``forward`` runs their children in a fixed order. A static image broadcast over T (csnn, rleaky)
is the same input at every step, so the graph simply takes one image per step.
"""

from __future__ import annotations

from torch import nn

from ..layer import SeqToBatch
from ..models import CSNN, FcLif, NmnistCSNN, RLeakyNet
from ..neuron import SpikingNeuron
from .errors import NotExportableError

RECIPE_ORDER: dict[type, tuple[str, ...]] = {
    FcLif: ("net",),
    CSNN: ("stem", "body"),
    NmnistCSNN: ("net",),
    RLeakyNet: ("encoder", "hidden", "readout", "output"),
}


def layers(model: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]]:
    """``[(name, layer), ...]`` in execution order; names are dotted paths without the
    ``SeqToBatch`` wrapper (``body.1`` for ``body[1].module``)."""
    if isinstance(model, SpikingNeuron):
        return [(prefix or type(model).__name__, model)]
    if isinstance(model, SeqToBatch):
        return layers(model.module, prefix)
    if type(model) in RECIPE_ORDER:
        children = [(n, getattr(model, n)) for n in RECIPE_ORDER[type(model)]]
    elif isinstance(model, nn.Sequential):
        children = list(model.named_children())
    elif not any(True for _ in model.children()):
        return [(prefix or type(model).__name__, model)]
    else:
        raise NotExportableError(
            f"'{prefix or type(model).__name__}' ({type(model).__name__}) runs its own "
            "forward(), which to_nir cannot follow; build the network as an nn.Sequential "
            "(spikeforge.layer.seq) or use a recipe model"
        )
    out: list[tuple[str, nn.Module]] = []
    for name, child in children:
        out += layers(child, f"{prefix}.{name}" if prefix else name)
    return out
