"""The reproduction table: each committed run of docs/results against its reference.

    python benchmarks/results_table.py

Reads ``docs/results/runs.json`` (per run folder: dataset, bar, reference figure, reference
schedule, machine) and each folder's ``metrics.csv``, and writes the table between the
``results:begin``/``results:end`` markers of ``docs/results/README.md`` and of the top-level
``README.md``. Columns: epochs run (of the reference schedule), best test accuracy and its
epoch, final test accuracy, the reference figure, the first epoch at or above the bar, and the
wall-clock time until then (the sum of the ``seconds`` column: train and test of every epoch up
to it, on the machine named).
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = ROOT / "docs" / "results"
sys.path.insert(0, str(HERE))

import results_md  # noqa: E402

BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    minutes = seconds / 60
    return f"{minutes:.0f} min" if minutes < 90 else f"{minutes / 60:.1f} h"


def _row(name: str, run: dict) -> str:
    with open(RESULTS / name / "metrics.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    accuracy = [float(r["test_acc"]) for r in rows]
    elapsed = 0.0
    reached = "not yet"
    for epoch, (acc, r) in enumerate(zip(accuracy, rows, strict=True), start=1):
        elapsed += float(r["seconds"])
        if acc >= run["bar"]:
            reached = f"epoch {epoch}, {_duration(elapsed)}"
            break
    best = max(accuracy)
    schedule = run["schedule"]
    epochs = f"{len(rows)} of {schedule}" if schedule else f"{len(rows)} (to plateau)"
    return (f"| `{name}` | {run['dataset']} | {epochs} | **{100 * best:.2f} %** "
            f"(epoch {accuracy.index(best) + 1}) | {100 * accuracy[-1]:.2f} % | "
            f"{run['reference']} | {reached} | {run['machine']} |")


def table() -> str:
    """The markdown table of every run folder listed in runs.json that has metrics."""
    runs = json.loads((RESULTS / "runs.json").read_text(encoding="utf-8"))
    lines = [
        BEGIN,
        "| run | data | epochs | best test accuracy | final | reference | bar first reached "
        "(wall clock) | machine |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += [_row(name, run) for name, run in runs.items()
              if (RESULTS / name / "metrics.csv").exists()]
    lines.append(END)
    return "\n".join(lines)


def main() -> None:
    section = table()
    for path in (RESULTS / "README.md", ROOT / "README.md"):
        results_md.replace_section(BEGIN, END, section, path)
    print(section)


if __name__ == "__main__":
    main()
