"""The report as a rich table on the terminal: one row per layer in the order they ran, a total
row, then the energy of the SNN beside the same net as an ANN, the costs used and what the
model's fused kernels compute."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from .report import Report


def _count(value: float) -> str:
    """Operations as 3 significant digits with k/M/G (e.g. ``1.23M``); ``-`` for zero."""
    if value == 0:
        return "-"
    for scale, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{unit}"
    return f"{value:.3g}"


def _energy(pj: float) -> str:
    """Picojoules as pJ, nJ or µJ (3 significant digits); ``-`` for zero."""
    if pj == 0:
        return "-"
    for scale, unit in ((1e6, "µJ"), (1e3, "nJ")):
        if pj >= scale:
            return f"{pj / scale:.3g} {unit}"
    return f"{pj:.3g} pJ"


def _percent(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.1f} %"


def table(report: Report, title: str | None = None) -> Table:
    """The per-layer table of ``report`` (per sample)."""
    t = Table(title=title, title_justify="left")
    for name, justify in (("layer", "left"), ("kind", "left"), ("rate", "right"),
                          ("silent", "right"), ("ACs", "right"), ("MACs", "right"),
                          ("energy", "right"), ("ANN MACs", "right")):
        t.add_column(name, justify=justify)
    for layer in report.layers:
        rate = "" if layer.rate is None else f"{layer.rate:.4f}"
        ops = ("", "", "", "") if layer.role == "spiking" else (
            _count(layer.acs), _count(layer.macs), _energy(layer.energy_pj),
            _count(layer.ann_macs))
        t.add_row(layer.name, layer.kind, rate, _percent(layer.silent), *ops)
    t.add_section()
    t.add_row("total", "", f"{report.rate:.4f}", "", _count(report.acs), _count(report.macs),
              _energy(report.energy_pj), _count(report.ann_macs), style="bold")
    return t


def print_report(report: Report, console: Console | None = None, title: str | None = None) -> None:
    """Print the table and the lines under it on ``console`` (default: stdout)."""
    console = console or Console()
    console.print(table(report, title))
    whole, extra = report.extra.get("test_set_samples"), report.extra
    chosen = (f" ({report.samples} of the {whole} test samples, {extra.get('classes_counted')} "
              "classes, drawn across the set by a shuffle with seed 0)"
              if extra.get("selection") == "shuffled, seed 0" and whole else "")
    lines = [f"per sample, over {report.samples} samples of {report.steps:.4g} time steps"
             f"{chosen}; rate = spikes per neuron per step, "
             "silent = neurons that never fire during a sample",
             f"energy: SNN {_energy(report.energy_pj)} (E_MAC x MACs + E_AC x ACs), "
             f"ANN {_energy(report.ann_energy_pj)} (E_MAC x ANN MACs)"
             + (f": the SNN needs {report.energy_pj / report.ann_energy_pj:.3g}x the ANN's "
                "energy" if report.ann_energy_pj else ""),
             f"costs {report.costs.name}: E_MAC {report.costs.e_mac_pj:g} pJ, E_AC "
             f"{report.costs.e_ac_pj:g} pJ ({report.costs.source})"]
    if report.accuracy is not None:
        lines.insert(0, f"accuracy on these samples: {100 * report.accuracy:.2f} %")
    if report.fast_path:
        lines.append(f"fused kernels: {report.fast_path}")
    for line in lines:
        console.print(line, highlight=False, markup=False)
