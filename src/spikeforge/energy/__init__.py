"""Energy and activity of a trained spiking network (``spikeforge energy``).

    report(model, batches, costs) -> Report     firing rates, synaptic operations, energy
    load_costs("45nm" | "costs.toml") -> Costs  energy per MAC and per AC, in pJ

Modules: :mod:`.counting` (hooks that count spikes and operations), :mod:`.fanout` (synapses
per input element), :mod:`.costs` (energy per operation and its sources), :mod:`.paths` (the
recipe models' counting path and what their fused kernels compute), :mod:`.report`,
:mod:`.table` (the terminal table).
"""

from .costs import COSTS_45NM, Costs, load_costs
from .report import Layer, Report, report

__all__ = ["COSTS_45NM", "Costs", "Layer", "Report", "load_costs", "report"]
