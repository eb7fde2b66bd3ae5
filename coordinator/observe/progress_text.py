"""The run's progress as text, from a metrics Snapshot: the progress line for logs and non-TTY output,
and each agent's share of the work for the end of a run."""
from __future__ import annotations

from llmbench.coordinator.observe.metrics import Snapshot


def utilisation_lines(s: Snapshot) -> list[str]:
    """Per agent: share of the queries and tokens, time with queries in flight, mean KV cache in use."""
    queries = sum(a.queries_done for a in s.agents) or 1
    tokens = sum(a.output_tokens for a in s.agents) or 1
    width = max((len(a.address) for a in s.agents), default=0)
    lines = []
    for a in s.agents:
        if a.status is None and not (a.queries_sent or a.queries_done):  # listed, but it never answered
            why = f": {a.last_error}" if a.last_error else ""
            lines.append(f"  {a.address:<{width}}  never ready (state at the end: {a.state}{why})")
            continue
        busy = f"{100 * min(a.busy_s / s.elapsed_s, 1.0):5.1f} %" if s.elapsed_s > 0 else "    ?"
        kv = f"{100 * a.kv_used:3.0f} %" if a.kv_used is not None else "  ?"
        lines.append(f"  {a.address:<{width}}  {100 * a.queries_done / queries:5.1f} % of queries  "
                     f"{100 * a.output_tokens / tokens:5.1f} % of tokens  busy {busy}  KV in use {kv}")
    return lines


def progress_line(s: Snapshot) -> str:
    """One line for logs and non-TTY output."""
    total = f"/{s.expected}" if s.expected else ""
    eta = f", ETA {s.eta_s:.0f} s" if s.eta_s is not None else ""
    agents = sum(1 for a in s.agents if a.state == "ready")
    extra = f", {s.redispatched} re-dispatched" if s.redispatched else ""
    extra += f", {s.failed} FAILED" if s.failed else ""
    return (f"[{s.elapsed_s:6.1f} s] {s.completed}{total} samples done, {s.inflight} in flight, {s.queued} queued; "
            f"{s.samples_per_s:.1f} samples/s, {s.tokens_per_s:.0f} tokens/s; {agents} agents{extra}{eta}")
