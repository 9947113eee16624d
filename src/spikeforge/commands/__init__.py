"""Subcommands of the ``spikeforge`` CLI, one module each (see :mod:`spikeforge.cli`)."""
