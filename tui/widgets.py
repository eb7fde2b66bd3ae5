"""The TUI's panels, each drawn from a RunView (the latest RunStatus and the kept history).

Everything drawn fits the terminal's width (tui/fit.py): the header keeps scenario, phase and elapsed
time and cuts the results path from the left; the agent tables drop their least telling columns first.
"""
from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import DataTable, ProgressBar, Sparkline, Static

from llmbench.proto import pb
from llmbench.tui.fit import clock, columns_that_fit, cut, cut_left, meter, time_axis
from llmbench.tui.state import RunView

GIB = 1 << 30
PANE_PADDING = 2  # TabPane's padding, left and right
ADDRESS_WIDTH = 24  # longer agent addresses (cluster DNS names) are cut: the table keys rows by the whole one
STATE_WIDTH = 24


def ms(value_s: float) -> str:
    return f"{value_s * 1000:.1f}"


def header_line(s: pb.RunStatus, width: int = 0) -> str:
    """What runs, its phase and elapsed time first; the results path in what is left of width (0: all)."""
    head = f"llmbench · {s.scenario or '?'} {s.mode} · phase {s.phase} · {clock(s.elapsed_s)} elapsed"
    if not width:
        return f"{head} · results {s.output_dir}"
    room = width - len(head) - len(" · results ")
    return f"{head} · results {cut_left(s.output_dir, room)}" if room >= 8 else cut(head, width)


def progress_line(s: pb.RunStatus) -> str:
    total = f"/{s.expected:,}" if s.expected else ""
    eta = f"ETA {clock(s.eta_s)}" if s.eta_s >= 0 else "ETA -"
    extra = f", {s.redispatched} re-dispatched" if s.redispatched else ""
    extra += f", {s.failed} FAILED" if s.failed else ""
    return (f"{s.completed:,}{total} samples · {s.samples_per_s:.1f} samples/s · {s.tokens_per_s:,.0f} tokens/s · "
            f"{eta} · {s.inflight} in flight, {s.queued} queued{extra}")


class Header(Static):
    """One line: the run's header_line, fitted again whenever the terminal's width changes."""
    DEFAULT_CSS = "Header { height: 1; }"

    def __init__(self, waiting_for: str, **kwargs) -> None:
        super().__init__(cut(f"llmbench · waiting for {waiting_for}", 80), markup=False, **kwargs)
        self.status: pb.RunStatus | None = None

    def show(self, status: pb.RunStatus) -> None:
        self.status = status
        self.update(header_line(status, self.app.size.width - PANE_PADDING))

    def on_resize(self) -> None:
        if self.status is not None:
            self.show(self.status)


class Progress(Vertical):
    DEFAULT_CSS = "Progress { height: auto; } Progress ProgressBar { width: 1fr; }"

    def compose(self) -> ComposeResult:
        yield ProgressBar(show_eta=False, id="bar")
        yield Static("waiting for the run to start", id="progress-text", markup=False)

    def show(self, view: RunView) -> None:
        s = view.status
        self.query_one("#bar", ProgressBar).update(total=s.expected or None, progress=s.completed)
        self.query_one("#progress-text", Static).update(progress_line(s))


class Throughput(Vertical):
    """Tokens/s and samples/s over the test, each a sparkline with its time axis (elapsed m:ss) under it."""
    DEFAULT_CSS = "Throughput { height: auto; } Throughput Sparkline { height: 3; }"  # 1 on short screens (app.py)

    def compose(self) -> ComposeResult:
        for name in ("tokens", "samples"):
            yield Static("", id=f"{name}-label", markup=False)
            yield Sparkline([], id=f"{name}-spark")
            yield Static("", id=f"{name}-axis", markup=False)

    def show(self, view: RunView) -> None:
        width = self.size.width or self.app.size.width - PANE_PADDING  # 0 until it is first laid out
        axis = time_axis(view.times[0], view.times[-1], width) if view.times else ""
        for name, series, now in (("tokens", view.tokens_per_s, view.status.tokens_per_s),
                                  ("samples", view.samples_per_s, view.status.samples_per_s)):
            unit = "output tokens/s" if name == "tokens" else "samples/s"
            peak = max(series, default=0.0)
            self.query_one(f"#{name}-label", Static).update(cut(f"{unit}: {now:,.1f} now, peak {peak:,.1f}", width))
            self.query_one(f"#{name}-spark", Sparkline).data = list(series)
            self.query_one(f"#{name}-axis", Static).update(axis)


class LatencyTable(DataTable):
    """TTFT and TPOT percentiles beside the scenario's p99 limits (62 cells wide: fits 80 columns)."""
    COLUMNS = ("latency", "queries", "p50 ms", "p90 ms", "p99 ms", "max ms", "p99 limit ms", "vs limit")

    def on_mount(self) -> None:
        self.cursor_type = "none"
        for label in self.COLUMNS:
            self.add_column(label, key=label)
        for name in ("TTFT", "TPOT"):
            self.add_row(name, *["-"] * (len(self.COLUMNS) - 1), key=name)

    def show(self, view: RunView) -> None:
        for name, p in (("TTFT", view.status.ttft), ("TPOT", view.status.tpot)):
            verdict = "-" if not p.limit_s or not p.count else ("ok" if p.p99_s <= p.limit_s else "OVER")
            values = (name, str(p.count), ms(p.p50_s), ms(p.p90_s), ms(p.p99_s), ms(p.max_s),
                      ms(p.limit_s) if p.limit_s else "none", verdict)
            for column, value in zip(self.COLUMNS, values):
                self.update_cell(name, column, value, update_width=True)


def agent_cells(a: pb.AgentRunStatus) -> dict[str, str]:
    st = a.status if a.HasField("status") else None
    kv_total = st.kv_blocks_total * st.kv_block_size if st else 0
    state = a.state + ("" if not a.last_error or a.state == "ready" else f" ({a.last_error})")
    return {
        "agent": cut(a.address, ADDRESS_WIDTH),
        "state": cut(state, STATE_WIDTH),
        "node": st.node_name if st else "-",
        "device": st.model.device if st else "-",
        "model": f"{st.model.name} ({st.model.engine})" if st else "-",
        "memory used": meter(1 - st.memory_free_bytes / st.memory_total_bytes, 5)
        if st and st.memory_total_bytes else "-",
        "memory free": f"{st.memory_free_bytes / GIB:.1f}/{st.memory_total_bytes / GIB:.1f} GiB {st.memory_kind}"
        if st else "-",
        "KV used": meter(1 - st.kv_blocks_free / st.kv_blocks_total, 5) if st and st.kv_blocks_total else "-",
        "KV free": f"{st.kv_tokens_available:,}/{kv_total:,}" if st else "-",
        "run/wait": f"{st.running}/{st.waiting}" if st else "-",
        "tokens/s": f"{st.output_tokens_per_s:,.0f}" if st else "-",
        "done": f"{a.queries_done:,}",
        "in flight": str(a.inflight),
        "lost": str(a.losses),
    }


class AgentsTable(DataTable):
    """One row per agent; the columns that fit the terminal's width (the rest go in DROP_FIRST's order)."""
    DEFAULT_CSS = "AgentsTable { scrollbar-size-vertical: 1; }"
    FULL = ("agent", "state", "node", "device", "model", "KV used", "KV free", "memory used", "memory free",
            "run/wait", "tokens/s", "done", "in flight", "lost")
    COMPACT = ("agent", "state", "KV used", "memory used", "run/wait", "tokens/s", "done", "in flight")
    # What a narrow terminal gives up first: what another view or the meters also say, then the details.
    DROP_FIRST = ("memory free", "KV free", "node", "device", "model", "lost", "in flight", "run/wait", "done",
                  "memory used", "tokens/s", "KV used", "state")

    def __init__(self, columns: tuple[str, ...], **kwargs) -> None:
        super().__init__(**kwargs)
        self.columns_wanted = columns
        self.columns_shown: tuple[str, ...] = ()

    def on_mount(self) -> None:
        self.cursor_type = "row"

    def show(self, view: RunView) -> None:
        rows = {a.address: agent_cells(a) for a in view.status.agents}
        widths = {c: max([len(c), *(len(cells[c]) for cells in rows.values())]) for c in self.columns_wanted}
        room = self.app.size.width - PANE_PADDING - 1  # the vertical scrollbar's cell, where many agents scroll
        shown = columns_that_fit(widths, self.columns_wanted, self.DROP_FIRST, room)
        if shown != self.columns_shown or [str(k.value) for k in self.rows] != list(rows):
            self.clear(columns=shown != self.columns_shown)
            if shown != self.columns_shown:
                self.columns_shown = shown
                for label in shown:
                    self.add_column(label, key=label)
            for address, cells in rows.items():
                self.add_row(*[cells[c] for c in shown], key=address)
            return
        for address, cells in rows.items():
            for c in shown:
                self.update_cell(address, c, cells[c], update_width=True)
