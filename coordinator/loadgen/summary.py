"""Read LoadGen's mlperf_log_summary.txt into the few figures a user looks at first."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from llmbench.coordinator.loadgen import scenarios

SUMMARY_FILE = "mlperf_log_summary.txt"
_HEADLINE_LATENCY = re.compile(r"^(\d+(?:\.\d+)?)th percentile latency \(ns\)\s*:\s*(\d+)\s*$", re.MULTILINE)


@dataclass
class Summary:
    path: Path
    result: str  # VALID | INVALID; "" for an accuracy run
    scenario: str  # LoadGen's (Server for an Interactive run)
    mode: str
    samples_per_s: float | None  # Offline: samples/s; Server: completed samples/s
    tokens_per_s: float | None
    target_qps: float | None
    ttft_p99_ms: float | None
    tpot_p99_ms: float | None
    ttft_limit_ms: float | None  # None where the scenario has no TTFT/TPOT limits
    tpot_limit_ms: float | None
    problems: list[str]  # the "... satisfied : NO" lines and recommendations
    latency_percentile: float | None = None  # SingleStream's result: its query latency at this percentile
    latency_ms: float | None = None

    @property
    def arrives_at_rate(self) -> bool:
        """Queries arrived at a target rate (LoadGen's Server, which Interactive runs as)."""
        spec = scenarios.by_loadgen(self.scenario)
        return spec is not None and spec.arrival == scenarios.AT_RATE

    def lines(self) -> list[str]:
        if not self.result:
            return [f"LoadGen ran in accuracy mode (no performance result): outputs in "
                    f"{self.path.parent / 'mlperf_log_accuracy.json'}"]
        out = [f"Result is : {self.result}  ({self.scenario}, {self.mode})"]
        if self.latency_ms is not None:
            out.append(f"  {self.latency_percentile:g}th percentile latency: {self.latency_ms:.1f} ms")
        if self.samples_per_s is not None:
            at_rate = self.arrives_at_rate
            label = "Completed samples per second" if at_rate else "Samples per second"
            target = f" (target {self.target_qps:g} QPS)" if at_rate and self.target_qps else ""
            out.append(f"  {label}: {self.samples_per_s:g}{target}")
        if self.tokens_per_s is not None:
            out.append(f"  Tokens per second: {self.tokens_per_s:g}")
        if self.ttft_p99_ms is not None:
            out.append(f"  TTFT p99: {self.ttft_p99_ms:.1f} ms" + _limit(self.ttft_limit_ms))
        if self.tpot_p99_ms is not None:
            out.append(f"  TPOT p99: {self.tpot_p99_ms:.2f} ms" + _limit(self.tpot_limit_ms))
        out.extend(f"  {p}" for p in self.problems)
        return out


def _limit(limit_ms: float | None) -> str:
    return f" (limit {limit_ms:g} ms)" if limit_ms else ""


def _field(text: str, label: str) -> str | None:
    m = re.search(rf"^{re.escape(label)}\s*:\s*(.+?)\s*$", text, re.MULTILINE)
    return m.group(1) if m else None


def _number(text: str, *labels: str) -> float | None:
    for label in labels:
        value = _field(text, label)
        if value is not None:
            try:
                return float(value)
            except ValueError:
                return None
    return None


def _ms(ns: float | None) -> float | None:
    return ns / 1e6 if ns is not None else None


def read_summary(output_dir: Path) -> Summary:
    path = Path(output_dir) / SUMMARY_FILE
    if not path.is_file():
        raise FileNotFoundError(f"LoadGen wrote no {SUMMARY_FILE} in {output_dir}")
    text = path.read_text()
    lines = [line.strip() for line in text.splitlines()]
    result = _field(text, "Result is") or ""
    problems = [line for line in lines if re.search(r"satisfied\s*:\s*NO", line)]
    if result != "VALID":  # a VALID run's "* " lines are only its early-stopping figures
        problems += [line for line in lines if line.startswith("* ") and "successful" not in line]
    scenario = _field(text, "Scenario") or "?"
    spec = scenarios.by_loadgen(scenario)
    # LoadGen prints ttft_latency/tpot_latency in every scenario's parameters; they are limits only where
    # the scenario has them (SingleStream's are mlperf.conf defaults nothing is judged against).
    limits = spec is not None and spec.latency_limits
    headline = _HEADLINE_LATENCY.search(text)  # SingleStream: "90.0th percentile latency (ns) : 4145546277"
    return Summary(
        path=path, result=result, scenario=scenario, mode=_field(text, "Mode") or "?",
        samples_per_s=_number(text, "Completed samples per second", "Samples per second"),
        tokens_per_s=_number(text, "Completed tokens per second", "Tokens per second"),
        target_qps=_number(text, "target_qps"),
        ttft_p99_ms=_ms(_number(text, "99.00 percentile first token latency (ns)")),
        tpot_p99_ms=_ms(_number(text, "99.00 percentile time to output token (ns)")),
        ttft_limit_ms=_ms(_number(text, "ttft_latency (ns)")) if limits else None,
        tpot_limit_ms=_ms(_number(text, "tpot_latency (ns)")) if limits else None,
        problems=problems,
        latency_percentile=float(headline.group(1)) if headline else None,
        latency_ms=_ms(float(headline.group(2))) if headline else None)
