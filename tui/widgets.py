"""The TUI's panels, each drawn from a RunView (the latest RunStatus and the kept history)."""
from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import DataTable, ProgressBar, Sparkline, Static

from llmbench.proto import pb
from llmbench.tui.state import RunView

GIB = 1 << 30


def duration(seconds: float) -> str:
    seconds = max(int(round(seconds)), 0)
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


def ms(value_s: float) -> str:
    return f"{value_s * 1000:.1f}"


def header_line(s: pb.RunStatus) -> str:
    return (f"llmbench · {s.scenario or '?'} {s.mode} · phase {s.phase} · {duration(s.elapsed_s)} elapsed · "
            f"results {s.output_dir}")


def progress_line(s: pb.RunStatus) -> str:
    total = f"/{s.expected:,}" if s.expected else ""
    eta = f"ETA {duration(s.eta_s)}" if s.eta_s >= 0 else "ETA -"
    extra = f", {s.redispatched} re-dispatched" if s.redispatched else ""
    extra += f", {s.failed} FAILED" if s.failed else ""
    return (f"{s.completed:,}{total} samples · {s.samples_per_s:.1f} samples/s · {s.tokens_per_s:,.0f} tokens/s · "
            f"{eta} · {s.inflight} in flight, {s.queued} queued{extra}")


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
    DEFAULT_CSS = "Throughput { height: auto; } Throughput Sparkline { height: 3; margin-bottom: 1; }"

    def compose(self) -> ComposeResult:
        yield Static("output tokens/s", id="tokens-label", markup=False)
        yield Sparkline([], id="tokens-spark")
        yield Static("samples/s", id="samples-label", markup=False)
        yield Sparkline([], id="samples-spark")

    def show(self, view: RunView) -> None:
        for name, series, now in (("tokens", view.tokens_per_s, view.status.tokens_per_s),
                                  ("samples", view.samples_per_s, view.status.samples_per_s)):
            unit = "output tokens/s" if name == "tokens" else "samples/s"
            peak = max(series, default=0.0)
            self.query_one(f"#{name}-label", Static).update(f"{unit}: {now:,.1f} now, peak {peak:,.1f}")
            self.query_one(f"#{name}-spark", Sparkline).data = list(series)


class LatencyTable(DataTable):
    """TTFT and TPOT percentiles beside the scenario's p99 limits."""
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
    return {
        "agent": a.address,
        "state": a.state + ("" if not a.last_error or a.state == "ready" else f" ({a.last_error})"),
        "node": st.node_name if st else "-",
        "device": st.model.device if st else "-",
        "model": f"{st.model.name} ({st.model.engine})" if st else "-",
        "memory free": f"{st.memory_free_bytes / GIB:.1f}/{st.memory_total_bytes / GIB:.1f} GiB {st.memory_kind}"
        if st else "-",
        "KV free": f"{st.kv_tokens_available:,}/{kv_total:,}" if st else "-",
        "run/wait": f"{st.running}/{st.waiting}" if st else "-",
        "tokens/s": f"{st.output_tokens_per_s:,.0f}" if st else "-",
        "done": f"{a.queries_done:,}",
        "in flight": str(a.inflight),
        "lost": str(a.losses),
    }


class AgentsTable(DataTable):
    FULL = ("agent", "state", "node", "device", "model", "memory free", "KV free", "run/wait", "tokens/s", "done",
            "in flight", "lost")
    COMPACT = ("agent", "state", "KV free", "run/wait", "tokens/s", "done", "in flight")

    def __init__(self, columns: tuple[str, ...], **kwargs) -> None:
        super().__init__(**kwargs)
        self.columns_shown = columns

    def on_mount(self) -> None:
        self.cursor_type = "row"
        for label in self.columns_shown:
            self.add_column(label, key=label)

    def show(self, view: RunView) -> None:
        agents = list(view.status.agents)
        if [str(k.value) for k in self.rows] != [a.address for a in agents]:
            self.clear()
            for a in agents:
                cells = agent_cells(a)
                self.add_row(*[cells[c] for c in self.columns_shown], key=a.address)
            return
        for a in agents:
            cells = agent_cells(a)
            for c in self.columns_shown:
                self.update_cell(a.address, c, cells[c], update_width=True)
