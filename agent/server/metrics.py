"""The agent's Prometheus metrics (`llmbench agent --metrics-port`), read from the engine at each scrape.

Step times are histograms by step kind; names carry their unit and counters end in `_total`. The
process's own metrics (CPU, memory, file descriptors) come with them, unprefixed, as usual.
"""
from __future__ import annotations

from llmbench.agent.server import query_errors
from llmbench.agent.server.status import StatusReporter, memory_info
from llmbench.agent.engine.step_cost import StepCosts
from llmbench.agent.engine.types import EngineStats
from llmbench.common.histogram import add_histogram
from llmbench.common.process_metrics import process_families
from llmbench.common.prometheus import Family, MetricsServer

PREFIX = "llmbench_agent_"


def collect(reporter: StatusReporter) -> list[Family]:
    info = reporter.engine.info
    s = reporter.engine.stats() if reporter.ready else EngineStats(0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    free, total, kind = memory_info(info.device)
    who = dict(agent=reporter.agent_id)

    def family(name: str, kind_: str, help_text: str, value: float, **labels: str) -> Family:
        return Family(PREFIX + name, kind_, help_text).add(value, **who, **labels)

    return [
        family("info", "gauge", "what the agent serves (always 1)", 1, node=reporter.node_name, model=info.name,
               engine=info.engine, device=info.device, dtype=info.dtype),
        family("ready", "gauge", "1 once the model is loaded and warm", 1 if reporter.ready else 0),
        family("output_tokens_total", "counter", "tokens generated", s.output_tokens_total),
        family("prompt_tokens_total", "counter", "prompt tokens prefilled", s.prompt_tokens_total),
        family("steps_total", "counter", "engine steps run", s.steps_total),
        family("queries_received_total", "counter", "queries received", s.queries_received_total),
        family("queries_finished_total", "counter", "queries finished (errors included)", s.queries_finished_total),
        family("running_queries", "gauge", "queries prefilling or decoding", s.running),
        family("waiting_queries", "gauge", "queries received and not admitted yet", s.waiting),
        family("kv_free_tokens", "gauge", "free KV tokens not promised to waiting queries (may be negative)",
               s.kv_tokens_available),
        family("kv_free_blocks", "gauge", "free KV-cache blocks", s.kv_blocks_free),
        family("kv_blocks", "gauge", "KV-cache blocks in all", s.kv_blocks_total),
        family("kv_block_size_tokens", "gauge", "tokens per KV-cache block", info.kv_block_size),
        family("memory_free_bytes", "gauge", "free device (cuda) or host memory", free, memory=kind),
        family("memory_total_bytes", "gauge", "device (cuda) or host memory in all", total, memory=kind),
        family("max_batch_queries", "gauge", "most queries running at once", info.max_batch),
        errors_family(who),
        *step_families(reporter.engine.step_costs, who),
        *process_families(),
    ]


def errors_family(who: dict[str, str]) -> Family:
    f = Family(PREFIX + "query_errors_total", "counter", "queries answered with an error, by code (invalid_query, "
               "too_long, duplicate_id, internal)")
    for code, n in query_errors.snapshot().items():
        f.add(n, **who, code=code)
    return f


def step_families(costs: StepCosts, who: dict[str, str]) -> list[Family]:
    """Each engine step's seconds by kind (decode: decode rows only; mixed: with prefill), wall and on the device."""
    wall = Family(PREFIX + "step_seconds", "histogram", "engine step wall time, by kind (decode, mixed)")
    device = Family(PREFIX + "step_device_seconds", "histogram", "engine step time on the device (first kernel "
                    "to last; CPU: the forward), by kind")
    for family, histograms in ((wall, costs.wall_seconds), (device, costs.device_seconds)):
        for kind, h in histograms.items():
            add_histogram(family, h.snapshot(), **who, kind=kind)
    return [wall, device]


def exporter(reporter: StatusReporter, host: str, port: int) -> MetricsServer:
    return MetricsServer(lambda: collect(reporter), host, port)
