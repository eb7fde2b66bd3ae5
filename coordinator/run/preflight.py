"""What can be checked about a run before any agent is started or contacted.

Flag values, flag combinations, the dataset file, the tokenizer, LoadGen's settings and the output
folder: a mistake in any of them fails in a second with one line naming the flag, not after the
agents have loaded their models. Only what depends on the agents (their vocabulary and context, the
synthetic prompts made for them) waits until they are ready.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from llmbench.coordinator.data import loaders, prompt
from llmbench.coordinator.run import outputs
from llmbench.coordinator.loadgen import benchmarks, early_stopping, scenarios, settings as lgsettings
from llmbench.coordinator.data.dataset import Dataset
from llmbench.coordinator.scoring import compliance

if TYPE_CHECKING:
    from llmbench.coordinator.run.session import CoordinatorConfig

MAX_RUN_S = lgsettings.MAX_DURATION_S
MAX_QUERIES = 10_000_000  # LoadGen plans every query up front; MLPerf's runs issue tens of thousands
SLOW_BY = 1.5  # say so when LoadGen will run this many times --duration (and 10 s more)


@dataclass
class Checked:
    """The outcome of the checks, carried to the run."""
    dataset: Dataset | None  # a dataset file, read and checked; None: synthetic, made for the agents' vocabulary
    notes: list[str] = field(default_factory=list)  # one line each, said when the run starts
    stale: list[Path] = field(default_factory=list)  # an earlier run's files, replaced once this run's are whole
    load_s: float = 0.0  # time spent reading the dataset file


def check_choices(benchmark: str, scenario: str, mode: str) -> None:
    benchmarks.get(benchmark).scenario(scenario)
    if mode not in lgsettings.MODES:
        raise ValueError(f"unknown mode {mode!r}: use one of {', '.join(lgsettings.MODES)}")


def check_range(flag: str, value: float | None, low: float, high: float, *, low_included: bool = False,
                why: str = "") -> None:
    """value within low..high (low itself only if included); the error names the flag and the value."""
    if value is None:
        return
    above = low <= value if low_included else low < value
    if not (math.isfinite(value) and above and value <= high):
        bound = f">= {low:g}" if low_included else f"> {low:g}"
        raise ValueError(f"{flag} must be {bound} and <= {high:g}{why}, got {value:g}")


def check_numbers(cfg: CoordinatorConfig) -> None:
    if cfg.max_samples is not None and cfg.max_samples < 1:
        raise ValueError(f"--max-samples must be at least 1, got {cfg.max_samples}")
    if cfg.dataset == "synthetic" and (cfg.max_samples or 0) > loaders.SYNTHETIC_MAX:
        raise ValueError(f"--max-samples {cfg.max_samples:,}: synthetic prompts are made in memory, at most "
                         f"{loaders.SYNTHETIC_MAX:,} (MLPerf's set has 13,368)")
    if cfg.progress_s != 0:
        check_range("--progress", cfg.progress_s, 0.1, 3600, low_included=True, why=" (0: no progress lines)")
    check_range("--connect-timeout", cfg.connect_timeout_s, 0, 3600)
    check_range("--no-agent-timeout", cfg.no_agent_timeout_s, 0, MAX_RUN_S)
    check_range("--ready-timeout", cfg.ready_timeout_s, 0, MAX_RUN_S)


def settings_for(cfg: CoordinatorConfig, sample_count: int) -> lgsettings.BenchSettings:
    # With --max-samples, an Offline run is one pass over the set, not mlperf.conf's one of the whole dataset.
    one_pass = (scenarios.get(cfg.scenario).arrival == scenarios.ONE_QUERY and cfg.max_samples is not None
                and cfg.demo is None)
    return lgsettings.build(cfg.scenario, cfg.mode, sample_count=sample_count, benchmark=cfg.benchmark,
                            user_conf=cfg.user_conf, target_qps=cfg.target_qps, duration_s=cfg.duration_s,
                            demo=cfg.demo, min_query_count=sample_count if one_pass else None,
                            audit=compliance.TEST06_OVERRIDES if cfg.compliance else ())


def pace(cfg: CoordinatorConfig, bench: lgsettings.BenchSettings) -> str:
    """The setting LoadGen plans the test's queries by, and where it came from."""
    t = bench.test
    if bench.spec.arrival == scenarios.ONE_AT_A_TIME:
        return f"expected latency {t.single_stream_expected_latency_ns / 1e6:g} ms (mlperf.conf/user.conf)"
    qps = getattr(t, bench.spec.rate_setting)
    return f"--target-qps {qps:g}" if cfg.target_qps is not None else f"target_qps {qps:g} (mlperf.conf/user.conf)"


def length_notes(cfg: CoordinatorConfig, bench: lgsettings.BenchSettings, sample_count: int) -> list[str]:
    """Refuse a test LoadGen could never finish; say so when it will run far longer than --duration, or
    too few queries for its early stopping to call it VALID."""
    if cfg.mode != "performance" or cfg.compliance:  # accuracy: one pass; TEST06 sets its own counts
        return []
    t = bench.test
    queries = bench.expected_queries(sample_count)
    if queries > MAX_QUERIES:
        raise ValueError(f"{pace(cfg, bench)} with min_duration {t.min_duration_ms / 1000:g} s: LoadGen would issue "
                         f"{queries:,} queries, more than {MAX_QUERIES:,}")
    if bench.spec.arrival != scenarios.AT_RATE:  # how long the queries take depends on the agents, not on a rate
        return []
    rate = pace(cfg, bench)
    qps = getattr(t, bench.spec.rate_setting)
    notes = []
    needed = early_stopping.SERVER_QUERIES
    if queries < needed:
        notes.append(f"expect INVALID: LoadGen issues about {queries:,} queries at {qps:g} QPS and its p99 early "
                     f"stopping needs at least {needed} with none over the latency limits; a longer --duration "
                     f"or a higher --target-qps gives it enough")
    seconds, duration = queries / qps, t.min_duration_ms / 1000
    if seconds > MAX_RUN_S:
        raise ValueError(f"{rate}: LoadGen would issue {queries:,} queries at that rate, about {seconds:.3g} s; "
                         f"a run may last at most {MAX_RUN_S:g} s")
    if seconds > max(SLOW_BY * duration, duration + 10):
        why = f"min_query_count {t.min_query_count}" if t.min_query_count >= qps * duration else "min_duration"
        if queries > max(t.min_query_count, qps * duration):
            why += f", rounded up to whole passes over the {bench.performance_sample_count} performance samples"
        notes.append(f"expect about {seconds:.0f} s of LoadGen test, not the {duration:g} s of min_duration: "
                     f"{queries:,} queries at {qps:g} QPS ({why}); a higher --target-qps or a smaller --max-samples "
                     f"or min_query_count (--user-conf) shortens it")
    return notes


def read_dataset(cfg: CoordinatorConfig) -> Dataset | None:
    """A dataset file, read and checked as far as it can be without the agents (vocabulary, context)."""
    if cfg.dataset == "synthetic":
        return None
    return loaders.load(cfg.dataset, tokenizer=cfg.tokenizer, max_samples=cfg.max_samples)


def check_tokenizer(cfg: CoordinatorConfig, dataset: Dataset | None) -> None:
    """Accuracy decodes the outputs with --tokenizer at the end: a bad one fails now instead."""
    if cfg.mode == "accuracy" and cfg.tokenizer is not None and dataset is not None and dataset.references:
        prompt.load_tokenizer(cfg.tokenizer)


def check(cfg: CoordinatorConfig) -> Checked:
    """Every check that needs no agent; the output folder is prepared last, once the rest is known good."""
    check_choices(cfg.benchmark, cfg.scenario, cfg.mode)
    if cfg.compliance and cfg.mode == "accuracy":
        raise ValueError(f"--compliance {cfg.compliance} audits a performance run (LoadGen logs some of its "
                         f"responses): drop --mode accuracy or --compliance")
    check_numbers(cfg)
    t0 = time.monotonic()
    dataset = read_dataset(cfg)
    load_s = time.monotonic() - t0
    check_tokenizer(cfg, dataset)
    samples = len(dataset) if dataset is not None else cfg.max_samples or loaders.SYNTHETIC_SAMPLES
    notes = length_notes(cfg, settings_for(cfg, samples), samples)
    stale, folder_notes = outputs.check_folder(cfg.output)
    return Checked(dataset=dataset, notes=notes + folder_notes, stale=stale, load_s=load_s)
