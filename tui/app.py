"""The Textual app: one run's progress, throughput, latencies, agents and log, from any Source.

It polls its source at a fixed rate (4 Hz), never per token or per message. q leaves: when the run
belongs to this process it first asks, then aborts it and waits for the run to end (agent streams
closed) before leaving; when attached it only leaves. tab / shift+tab and 1-3 switch views. Once the
run is over (done, failed, abandoned) the app shows how it ended and leaves on its own, so the summary
printed after it follows at once; with stay=True it waits for q instead.
"""
from __future__ import annotations

import asyncio
import time

from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.widgets import Footer, RichLog, Static, TabbedContent, TabPane

from llmbench.tui.source import Source
from llmbench.tui.state import LOG_LINES, RunView
from llmbench.tui.widgets import AgentsTable, Header, LatencyTable, Progress, Throughput

REFRESH_S = 0.25
ABORT_WAIT_S = 20.0  # the run gets this long to close its agent streams after an abort
LEAVE_AFTER_S = 1.5  # how long the end of a run stays on screen before the app leaves on its own
SHORT_ROWS = 32  # terminals with fewer rows get one-row sparklines: the overview fits 80x24 unscrolled
VIEWS = ("overview", "agents", "log")
CONFIRM_ABORT = ("Abort the run? LoadGen stops early, the agents' streams are closed and no report is written. "
                 "y or Ctrl-C: abort   n: keep running")


class RunApp(App):
    ENABLE_COMMAND_PALETTE = False
    CSS = """
    #header { background: $primary; color: $text; padding: 0 1; }
    #banner { background: $warning; color: $text; padding: 0 1; display: none; }
    #banner.shown { display: block; }
    #views, #views > ContentSwitcher { height: 1fr; }
    TabPane { padding: 0 1; height: 1fr; scrollbar-size-vertical: 1; }
    LatencyTable, AgentsTable { height: auto; max-height: 16; margin-bottom: 1; }
    RichLog { overflow-y: auto; scrollbar-size-vertical: 1; }
    .short Throughput Sparkline { height: 1; }
    """
    BINDINGS = [
        Binding("q", "leave", "quit"),
        Binding("ctrl+c", "interrupt", "quit", show=False, priority=True),
        Binding("ctrl+q", "leave", "quit", show=False, priority=True),
        Binding("tab", "switch(1)", "next view", priority=True),
        Binding("shift+tab", "switch(-1)", "previous view", show=False, priority=True),
        Binding("1", "show_view('overview')", "overview"),
        Binding("2", "show_view('agents')", "agents"),
        Binding("3", "show_view('log')", "log"),
        Binding("y", "confirm(True)", "abort", show=False),
        Binding("n", "confirm(False)", "keep running", show=False),
        Binding("escape", "confirm(False)", "keep running", show=False),
    ]

    def __init__(self, source: Source, refresh_s: float = REFRESH_S, stay: bool = False,
                 leave_after_s: float = LEAVE_AFTER_S) -> None:
        super().__init__()
        self.source = source
        self.refresh_s = refresh_s
        self.stay = stay  # once the run is over, wait for q instead of leaving
        self.leave_after_s = leave_after_s
        self.over_since: float | None = None
        self.run_view = RunView()
        self.confirming = False
        self.aborting_since: float | None = None
        self.source_ended = False  # as of the last poll (read before it: the last message comes first)
        self._loop: asyncio.AbstractEventLoop | None = None

    def compose(self) -> ComposeResult:
        yield Header(self.source.description, id="header")
        with TabbedContent(id="views", initial="overview"):
            with TabPane("1 Overview", id="overview"):
                yield Progress()
                yield Throughput()
                yield LatencyTable(id="latency")
                yield AgentsTable(AgentsTable.COMPACT, id="agents-compact")
            with TabPane("2 Agents", id="agents"):
                yield AgentsTable(AgentsTable.FULL, id="agents-full")
            with TabPane("3 Log", id="log"):
                yield RichLog(max_lines=LOG_LINES, min_width=20, wrap=True, id="log-pane")
        yield Static("", id="banner", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.set_interval(self.refresh_s, self.refresh_view)
        self.refresh_view()

    def on_unmount(self) -> None:
        self.source.close()

    # --- refresh ----------------------------------------------------------------------------------
    def refresh_view(self) -> None:
        if not self.is_running:  # shutting down: the widgets are being removed under the timer
            return
        self.screen.set_class(self.size.height < SHORT_ROWS, "short")
        self.source_ended = self.source.ended
        for msg in self.source.poll():
            self.run_view.apply(msg)
        if self.run_view.status is not None:
            self.query_one(Header).show(self.run_view.status)
            self.query_one(Progress).show(self.run_view)
            self.query_one(Throughput).show(self.run_view)
            self.query_one(LatencyTable).show(self.run_view)
            for table in self.query(AgentsTable):
                table.show(self.run_view)
            log = self.query_one("#log-pane", RichLog)
            for line in self.run_view.take_lines():
                log.write(line)
        if self.confirming and self.run_over():
            self.confirming = False  # the question is moot: the run ended while it was asked
        self.show_banner(self.banner_text())
        if self.aborting_since is not None and (
                self.source_ended or time.monotonic() - self.aborting_since > ABORT_WAIT_S):
            self.exit()
        elif self.run_over() and not self.stay:
            if self.over_since is None:
                self.over_since = time.monotonic()
            if time.monotonic() - self.over_since >= self.leave_after_s:
                self.exit()

    def run_over(self) -> bool:
        s = self.run_view.status
        return (s is not None and s.finished) or self.source_ended

    def banner_text(self) -> str:
        s = self.run_view.status
        if self.aborting_since is not None:
            return "Aborting the run: stopping LoadGen's queries and closing the agent streams..."
        if self.confirming:
            return CONFIRM_ABORT
        if s is not None and s.finished:
            how = {"done": "Run finished", "failed": "Run FAILED", "aborted": "Run aborted"}.get(s.phase, "Run over")
            where = f"; report: {s.output_dir}/report.md" if s.phase == "done" else ""
            return f"{how}: {s.outcome}{where}.{self.leaving()}"
        if self.source.problem:
            return f"{self.source.problem}. q: leave"
        if self.source_ended:
            return f"The run ended without a final status.{self.leaving()}"
        return ""

    def leaving(self) -> str:
        return " Press q to leave." if self.stay else " Leaving..."

    def show_banner(self, text: str) -> None:
        banner = self.query_one("#banner", Static)
        banner.update(text)
        banner.set_class(bool(text), "shown")

    # --- actions ----------------------------------------------------------------------------------
    def action_leave(self) -> None:
        if not self.source.controls_run or self.run_over():
            self.exit()
        elif self.aborting_since is None:
            self.confirming = True
            self.show_banner(self.banner_text())

    def action_interrupt(self) -> None:
        """Ctrl-C: the first asks like q; a second one while asking aborts, as in a shell."""
        if self.confirming:
            self.action_confirm(True)
        else:
            self.action_leave()

    def action_confirm(self, yes: bool) -> None:
        if not self.confirming:
            return
        self.confirming = False
        if yes:
            self.abort_run()
        self.show_banner(self.banner_text())

    def abort_run(self) -> None:
        """Stop the run now (y after q, or SIGTERM) and leave once it has ended."""
        self.confirming = False
        if self.aborting_since is None:
            self.aborting_since = time.monotonic()
            self.source.abort()

    def abort_run_threadsafe(self) -> None:
        """abort_run from a signal handler or another thread."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.abort_run)

    def action_switch(self, step: int) -> None:
        views = self.query_one("#views", TabbedContent)
        views.active = VIEWS[(VIEWS.index(views.active) + step) % len(VIEWS)]

    def action_show_view(self, name: str) -> None:
        self.query_one("#views", TabbedContent).active = name
