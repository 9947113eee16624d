"""What an export did: the time step, each layer's node and every approximation made.

Written beside the ``.nir`` file as JSON (:meth:`ExportReport.write`), so that no change of
behaviour between the trained network and the exported graph goes unrecorded.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..fileio import atomic_write


@dataclass(frozen=True)
class Approximation:
    """One place where the NIR graph does not compute what the network computes."""

    layer: str        # the layer's name in the PyTorch model, e.g. "body.1"
    node: str         # the NIR node that stands for it
    kind: str         # "max-pool", "subtract-reset", "soft-reset", "recurrent-reset", ...
    exported_as: str  # the NIR node type written instead
    detail: str       # what differs, in one sentence


@dataclass
class ExportReport:
    """Summary of :func:`spikeforge.export.to_nir`; ``exact`` when nothing was approximated."""

    dt: float
    input_shape: tuple[int, ...]
    nodes: dict[str, str] = field(default_factory=dict)   # NIR node → "layer (Class)"
    notes: list[str] = field(default_factory=list)
    approximations: list[Approximation] = field(default_factory=list)

    @property
    def exact(self) -> bool:
        return not self.approximations

    def to_dict(self) -> dict:
        out = asdict(self)
        out["input_shape"] = list(self.input_shape)
        out["exact"] = self.exact
        return out

    def write(self, path: str | Path) -> Path:
        """Write the report as JSON to ``path`` (replaced at once, or
        :class:`~spikeforge.errors.WriteError`) and return it."""
        return atomic_write(path, json.dumps(self.to_dict(), indent=2, ensure_ascii=False)
                            + "\n")

    def __str__(self) -> str:
        lines = [f"NIR export, dt = {self.dt:g} s per step, input {list(self.input_shape)}: "
                 + ("exact" if self.exact else f"{len(self.approximations)} approximation(s)")]
        lines += [f"  {a.layer} -> {a.node} ({a.exported_as}): {a.detail}"
                  for a in self.approximations]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)
