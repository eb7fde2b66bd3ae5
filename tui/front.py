"""`llmbench coordinator` and `llmbench run` with the TUI as their face on a terminal.

The coordinator knows nothing of the TUI (tui -> coordinator): it takes a live front, given here.
"""
from __future__ import annotations

import argparse

from llmbench.coordinator.commands import coordinator as coordinator_cli, run_local
from llmbench.coordinator.observe.metrics import RunMetrics
from llmbench.coordinator.run.session import CoordinatorConfig, RunResult


def live(cfg: CoordinatorConfig, metrics: RunMetrics) -> RunResult:
    from llmbench.tui.live import run_live  # Textual loads only when a terminal shows it
    return run_live(cfg, metrics)


class Coordinator:
    add_arguments = staticmethod(coordinator_cli.add_arguments)

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        return coordinator_cli.run(args, live=live)


class Run:
    add_arguments = staticmethod(run_local.add_arguments)

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        return run_local.run(args, live=live)
