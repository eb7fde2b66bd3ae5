"""`llmbench compare RUN_DIR...`: runs side by side from their results.json, with ratios to the first."""
from __future__ import annotations

import argparse
from pathlib import Path

from llmbench.coordinator.report import charts, comparison
from llmbench.coordinator.run.outputs import writable_file


def _percentiles(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(p) for p in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of numbers: {text!r}") from None
    if not values or not all(0 < p < 100 for p in values):
        raise argparse.ArgumentTypeError(f"percentiles go between 0 and 100: {text!r}")
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR",
                        help="run folders (--output of `llmbench run`/`coordinator`), the first the baseline")
    parser.add_argument("--percentiles", type=_percentiles, default=comparison.DEFAULT_PERCENTILES,
                        metavar="P,P", help="latency percentiles to show, of 50,90,95,99,99.9 (default 50,99)")
    parser.add_argument("--chart", type=Path, metavar="FILE", default=None,
                        help="also draw each figure's ratio to the first run into this PNG")


def run(args: argparse.Namespace) -> int:
    if len(args.runs) < 2:
        raise ValueError("give two run folders or more: the first is the one the others are compared with")
    if args.chart is not None:
        writable_file(args.chart, "--chart")
    runs = [comparison.load_run(folder) for folder in args.runs]
    rows = comparison.rows(runs, args.percentiles)
    for line in comparison.table(runs, rows):
        print(line)
    if args.chart is not None:
        ratios = {row.label: row.ratios() for row in rows if any(r is not None for r in row.ratios()[1:])}
        charts.comparison([str(r.folder) for r in runs], ratios, args.chart)
        print(f"chart: {args.chart}")
    return 0
