"""`llmbench tui --connect HOST:PORT`: watch a coordinator's run (its --status-port) from anywhere.

On a terminal it shows the same TUI as the coordinator's own; q only leaves (the run goes on), and it
leaves by itself once the run is over unless --stay.
Without a terminal it prints one progress line every few seconds until the run is over.
"""
from __future__ import annotations

import argparse
import re
import sys
import time

from llmbench.common.auth import add_client_arguments, client_security
from llmbench.proto import pb
from llmbench.tui.source import RemoteSource
from llmbench.tui.state import RunView
from llmbench.tui.widgets import progress_line

_ADDRESS = re.compile(r"(\[[0-9a-fA-F:.]+\]|[^:\s]+):(\d{1,5})")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--connect", required=True, metavar="HOST:PORT",
                   help="the coordinator's status address (its --status-port, e.g. 127.0.0.1:50060)")
    p.add_argument("--interval", type=float, default=0.5, help="seconds between status messages (default 0.5)")
    p.add_argument("--no-tui", action="store_true", help="progress lines instead of the TUI (the default off a terminal)")
    p.add_argument("--stay", action="store_true",
                   help="keep the TUI on screen once the run is over, until q (default: it leaves on its own)")
    add_client_arguments(p, "the coordinator's")  # its --status-port's TLS and token


def run(args: argparse.Namespace) -> int:
    match = _ADDRESS.fullmatch(args.connect)
    if not match or not 0 < int(match.group(2)) <= 65535:
        raise ValueError(f"--connect {args.connect!r}: expected HOST:PORT, e.g. 127.0.0.1:50060")
    if not 0.1 <= args.interval <= 60:
        raise ValueError(f"--interval {args.interval}: use 0.1 to 60 seconds")
    source = RemoteSource(args.connect, interval_ms=int(args.interval * 1000), security=client_security(args)).start()
    if not args.no_tui and sys.stdout.isatty() and sys.stderr.isatty():
        from llmbench.tui.app import RunApp
        app = RunApp(source, stay=args.stay)
        app.run()
        status = app.run_view.status
    else:
        status = print_progress(source, every_s=5.0)
    if source.refused:
        raise ValueError(source.refused)
    if status is None or not status.finished:
        print(f"llmbench tui: left before the run was over ({source.problem or 'the run goes on'})")
        return 0
    print(f"llmbench tui: the run is over ({status.phase}): {status.outcome}")
    return 0 if status.phase == "done" else 1


def print_progress(source: RemoteSource, every_s: float) -> pb.RunStatus | None:
    """The run's log lines, a progress line every every_s, and connection problems (once each) until
    the run is over; returns the last status."""
    view = RunView()
    last_line_at, said = 0.0, ""
    try:
        while True:
            ended = source.ended  # before polling: the last message is queued before ended is set
            for msg in source.poll():
                view.apply(msg)
            for line in view.take_lines():
                print(line, flush=True)
            if source.problem and source.problem != said and not source.refused:  # a refusal ends the command
                print(f"llmbench tui: {source.problem}", flush=True)
            said = source.problem
            if view.status is not None and (view.status.finished or time.monotonic() - last_line_at >= every_s):
                print(progress_line(view.status), flush=True)
                last_line_at = time.monotonic()
            if ended:
                return view.status
            time.sleep(0.2)
    finally:
        source.close()
