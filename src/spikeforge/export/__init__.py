"""Export to the Neuromorphic Intermediate Representation (NIR) and import from it.

    graph, report = to_nir(model, input_shape=(1, 28, 28), dt=1e-4)   # exact, or raises
    nir.write("net.nir", graph); report.write("net.nir.report.json")
    net = from_nir("net.nir")                                          # runs on [T, B, ...]

Needs the ``nir`` package: ``pip install 'spikeforge[nir]'``.
"""

from __future__ import annotations

try:
    import nir  # noqa: F401
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError("spikeforge.export needs the NIR package: pip install 'spikeforge[nir]'"
                      ) from err

from .errors import NIRError, NotExportableError
from .nir import DEFAULT_DT, fold_batchnorm, to_nir
from .nir_import import from_nir
from .report import Approximation, ExportReport

__all__ = ["DEFAULT_DT", "Approximation", "ExportReport", "NIRError", "NotExportableError",
           "fold_batchnorm", "from_nir", "to_nir"]
