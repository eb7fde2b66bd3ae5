"""Read LoadGen's mlperf_log_summary.txt into the few figures a user looks at first."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from llmbench.coordinator.loadgen import scenarios

SUMMARY_FILE = "mlperf_log_summary.txt"


@dataclass
class Summary:
    path: Path
    result: str  # VALID | INVALID; "" for an accuracy run
    scenario: str
    mode: str
    samples_per_s: float | None  # Offline: samples/s; Server: completed samples/s
    tokens_per_s: float | None
    target_qps: float | None
    ttft_p99_ms: float | None
    tpot_p99_ms: float | None
    ttft_limit_ms: float | None
    tpot_limit_ms: float | None
    problems: list[str]  # the "... satisfied : NO" lines and recommendations

    @property
    def latency_bound(self) -> bool:
        """Queries arrived at a rate, under TTFT/TPOT limits (LoadGen's Server, which Interactive runs as)."""
        spec = scenarios.by_loadgen(self.scenario)
        return spec is not None and spec.latency_bound

    def lines(self) -> list[str]:
        if not self.result:
            return [f"LoadGen ran in accuracy mode (no performance result): outputs in "
                    f"{self.path.parent / 'mlperf_log_accuracy.json'}"]
        out = [f"Result is : {self.result}  ({self.scenario}, {self.mode})"]
        if self.samples_per_s is not None:
            server = self.latency_bound
            label = "Completed samples per second" if server else "Samples per second"
            target = f" (target {self.target_qps:g} QPS)" if server and self.target_qps else ""
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
    problems = [line for line in lines if re.search(r"satisfied\s*:\s*NO", line)]
    problems += [line for line in lines if line.startswith("* ") and "successful" not in line]
    return Summary(
        path=path, result=_field(text, "Result is") or "", scenario=_field(text, "Scenario") or "?",
        mode=_field(text, "Mode") or "?",
        samples_per_s=_number(text, "Completed samples per second", "Samples per second"),
        tokens_per_s=_number(text, "Completed tokens per second", "Tokens per second"),
        target_qps=_number(text, "target_qps"),
        ttft_p99_ms=_ms(_number(text, "99.00 percentile first token latency (ns)")),
        tpot_p99_ms=_ms(_number(text, "99.00 percentile time to output token (ns)")),
        ttft_limit_ms=_ms(_number(text, "ttft_latency (ns)")),
        tpot_limit_ms=_ms(_number(text, "tpot_latency (ns)")),
        problems=problems)
