"""Errors of the NIR conversion; both are user errors the CLI prints as one sentence."""

from __future__ import annotations

from ..errors import SpikeforgeError


class NIRError(SpikeforgeError):
    """A NIR graph cannot be read back as a spikeforge network (unsupported node or layout)."""


class NotExportableError(NIRError):
    """A network (or one of its layers) has no exact NIR equivalent."""
