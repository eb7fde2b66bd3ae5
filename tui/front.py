"""`llmbench coordinator` and `llmbench run` with the TUI as their face on a terminal.

The coordinator knows nothing of the TUI (tui -> coordinator): it takes a live front, given here,
and the TUI's own flags are added here to the commands' own.
"""
from __future__ import annotations

import argparse

from llmbench.coordinator.commands import coordinator as coordinator_cli, run_local
from llmbench.coordinator.commands.coordinator import LiveFront
from llmbench.coordinator.observe.metrics import RunMetrics
from llmbench.coordinator.run.session import CoordinatorConfig, RunResult

STAY_HELP = ("keep the TUI on screen once the run is over, until q (default: it shows how the run ended, "
             "leaves, and the summary follows)")


def live(args: argparse.Namespace) -> LiveFront:
    def front(cfg: CoordinatorConfig, metrics: RunMetrics) -> RunResult:
        from llmbench.tui.live import run_live  # Textual loads only when a terminal shows it
        return run_live(cfg, metrics, stay=args.stay)
    return front


class Coordinator:
    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        coordinator_cli.add_arguments(p)
        p.add_argument("--stay", action="store_true", help=STAY_HELP)

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        return coordinator_cli.run(args, live=live(args))


class Run:
    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        run_local.add_arguments(p)
        p.add_argument("--stay", action="store_true", help=STAY_HELP)

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        return run_local.run(args, live=live(args))
