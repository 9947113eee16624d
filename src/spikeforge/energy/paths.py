"""Which forward pass the counter runs for each recipe network, and what the fast path skips.

The counts come from the layer-by-layer path, where every Linear/Conv is called as a module
(see :mod:`.counting`); the recipes' fused kernels compute the same numbers (same spikes, equal
outputs up to float summation order) without calling some of those modules:

- ``FcLif`` on images draws the Poisson spikes inside its Linear
  (:func:`spikeforge.encoding.poisson_linear`); here the images are encoded with
  :func:`spikeforge.encoding.poisson` from the same generator (the same spikes) and fed to
  ``model.net``.
- ``NmnistCSNN`` runs its hidden layers through the sparse kernels; here ``model.net`` runs
  them as dense layers (the same spikes up to float rounding).
- ``CSNN`` falls back to its separate IF and pooling layers on its own while recording.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .. import encoding, models

#: What the recipe's fast path really computes, per model class (shown with every report).
FAST_PATH = {
    models.FcLif: "the fused Poisson-Linear kernel skips the zero pixels (they never fire) but, "
                  "at every step, adds the weights of each nonzero pixel masked by its spike: "
                  "its work grows with the nonzero pixels x T, not with the spikes",
    models.CSNN: "dense: the convolutions and Linear layers run as dense oneDNN GEMMs over every "
                 "input, spike or not; the first Conv-BN runs once for all T (as counted); the "
                 "fused IF + max-pool kernel is elementwise",
    models.NmnistCSNN: "sparse: both Conv-MaxPool layers and the Linear run from the nonzero "
                       "inputs only (events, then spikes; kernels/sparse.py), so their work "
                       "grows with the events and spikes counted here",
    models.RLeakyNet: "dense: the encoder runs once on the image for all T; the readout and the "
                      "feedback V(S[t-1]) are dense GEMMs at every step (kernels/rleaky.py), "
                      "spike or not",
}


def fast_path(model: nn.Module) -> str | None:
    """One sentence on what ``model``'s fused kernels compute, or None for other models."""
    return FAST_PATH.get(type(model))


def counting_forward(model: nn.Module, x: Tensor, generator: torch.Generator | None = None):
    """``model(x)`` through the layer-by-layer path (see the module doc); ``x`` as the model
    takes it, images for an ``FcLif`` built with ``steps`` Poisson-encoded with ``generator``."""
    if isinstance(model, models.FcLif):
        if x.dim() == 4 and model.steps is not None:
            x = encoding.poisson(x, model.steps, generator=generator)
        return model.net(x)
    if isinstance(model, models.NmnistCSNN):
        return model.net(x)
    return model(x)
