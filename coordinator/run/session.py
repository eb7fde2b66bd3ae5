"""One benchmark run: agents ready, dataset, LoadGen settings, the LoadGen test, summary, accuracy.

`run_benchmark` is what `llmbench coordinator` and `llmbench run` call (and the TUI, which reads
the RunMetrics it is given). LoadGen's StartTest blocks, so it runs on its own thread while the
asyncio loop keeps the agent streams going.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from llmbench.coordinator.scoring import compliance
from llmbench.coordinator.data import loaders, prompt
from llmbench.coordinator.run import abandon, outputs, written
from llmbench.coordinator.run.staging import Staging
from llmbench.coordinator.loadgen import benchmarks, settings as lgsettings
from llmbench.coordinator.mesh.agent_link import AgentLink, LinkConfig
from llmbench.coordinator.loadgen.detail_log import wait_generated_count
from llmbench.coordinator.mesh.discovery import AgentWatcher
from llmbench.coordinator.mesh.dispatch import DispatchConfig, Pool
from llmbench.coordinator.observe.metrics import RunMetrics, Snapshot, record_throughput
from llmbench.coordinator.run.preflight import Checked, check, settings_for
from llmbench.coordinator.observe.progress_text import progress_line
from llmbench.coordinator.data.dataset import Dataset
from llmbench.coordinator.loadgen.summary import SUMMARY_FILE, Summary, read_summary
from llmbench.coordinator.loadgen.sut import LoadGenSut
from llmbench.common.kv import kv_tokens
from llmbench.common.threads import in_daemon_thread
from llmbench.proto import pb

log = logging.getLogger("llmbench.coordinator")


def precision(model: pb.ModelInfo) -> str:
    """An agent's number formats in a few words, e.g. "bfloat16, fp8 GEMMs (per-tensor weights, static
    activations), KV float8_e4m3fn (checkpoint scales)"."""
    parts = [model.dtype or "?"]
    if model.quantization and model.quantization != "none":
        scales = [f"per-{model.weight_scales} weights" if model.weight_scales else "",
                  f"{model.activation_scales} activations" if model.activation_scales else ""]
        parts.append(f"{model.quantization} GEMMs" + (f" ({', '.join(filter(None, scales))})" if any(scales) else ""))
    kv_scales = " (checkpoint scales)" if model.kv_scales == "checkpoint" else ""
    if model.kv_cache_dtype and (model.kv_cache_dtype != model.dtype or kv_scales):
        parts.append(f"KV {model.kv_cache_dtype}{kv_scales}")
    return ", ".join(parts)


@dataclass
class CoordinatorConfig:
    agents: str  # --agents: HOST:PORT[,...] or dns:///NAME:PORT
    output: Path
    benchmark: str = benchmarks.DEFAULT.name  # --benchmark: which MLPerf benchmark's settings and targets
    scenario: str = benchmarks.DEFAULT.scenario(None).name  # one of the benchmark's
    mode: str = "performance"
    dataset: str = "synthetic"
    tokenizer: str | None = None
    user_conf: str | None = None
    max_samples: int | None = None
    target_qps: float | None = None
    duration_s: float | None = None
    demo: lgsettings.DemoScale | None = None
    compliance: str | None = None  # "TEST06": run under its audit.config, then check the log
    seed: int = 0
    connect_timeout_s: float = 10.0  # an agent that never answers
    ready_timeout_s: float = 900.0  # an agent that answers but is still loading its model
    no_agent_timeout_s: float = 60.0  # queries waiting and no agent ready: give up
    progress_s: float = 5.0  # 0: no progress lines
    dispatch: DispatchConfig = field(default_factory=DispatchConfig)
    link: LinkConfig = field(default_factory=LinkConfig)  # loss detection, TLS, token
    checked: Checked | None = field(default=None, repr=False, compare=False)  # preflight.check's, once done


@dataclass
class RunResult:
    output: Path
    settings: lgsettings.BenchSettings
    # Not in repr: Python's asyncio.run formats the main task (and so this result) when it restores
    # SIGINT, and 13,368 prompt arrays take half a minute to format.
    dataset: Dataset = field(repr=False)
    summary: Summary
    snapshot: Snapshot
    duplicates: int  # answers the SUT ledger refused (must be 0)
    error: str  # why queries failed, "" on a clean run
    accuracy_lines: list[str]
    compliance_lines: list[str]
    timings_s: dict[str, float]  # wall-clock per phase
    staging: Staging  # where its files are until they are all whole (then in `output`)
    accuracy_passed: bool | None = None  # None: not scored
    compliance_passed: bool | None = None  # None: no compliance test
    gave_up: str = ""  # why the run could not go on (every agent lost), "" when it could


async def run_benchmark(cfg: CoordinatorConfig, metrics: RunMetrics | None = None,
                        say: Callable[[str], None] = print) -> RunResult:
    """The whole run; ends in abandon.Abandoned when told from elsewhere that it cannot go on."""
    async with abandon.abandonable():
        return await _benchmark(cfg, metrics, say)


async def _benchmark(cfg: CoordinatorConfig, metrics: RunMetrics | None, say: Callable[[str], None]) -> RunResult:
    checked = cfg.checked or check(cfg)  # bad input fails now, not after the agents are up
    metrics = metrics or RunMetrics()
    metrics.scenario, metrics.mode, metrics.output_dir = cfg.scenario, cfg.mode, str(cfg.output)
    say = metrics.echo(say)
    for note in checked.notes:
        say(note)
    loop = asyncio.get_running_loop()
    timings = metrics.timings_s  # the caller may have put earlier phases there (agent start)
    t0 = time.monotonic()
    pool = Pool(lambda address, p: AgentLink(address, p, cfg.link), metrics, cfg.dispatch)
    watcher = AgentWatcher(cfg.agents, pool.add_agent, pool.remove_agent)
    tasks: list[asyncio.Task] = []
    try:
        metrics.phase = "agents"
        if not await watcher.start():
            await watcher.wait_for(1, cfg.connect_timeout_s)
        await pool.wait_ready(cfg.connect_timeout_s, cfg.ready_timeout_s)
        timings["agents ready"] = time.monotonic() - t0
        for slot in pool.ready_agents():
            m = slot.capacity.status.model
            say(f"agent {slot.address}: {m.name} ({m.engine} engine, {m.device}, {precision(m)}), "
                f"{slot.capacity.kv_tokens_total} KV tokens")

        metrics.phase = "dataset"
        t1 = time.monotonic()
        dataset = await asyncio.to_thread(load_dataset, cfg, checked, pool)
        timings["dataset"] = checked.load_s + time.monotonic() - t1
        say(f"dataset {dataset.name}: {len(dataset)} samples")
        for note in dataset.notes:
            say(f"  note: {note}")

        bench = settings_for(cfg, len(dataset))
        for line in bench.describe():
            say(line)
        if bench.changes:
            say("Differs from MLPerf's settings (this run is not a compliant submission):")
            for line in bench.changes:
                say(f"  {line}")
        metrics.expected = bench.expected_queries(len(dataset))
        if bench.spec.latency_limits:
            metrics.ttft_limit_s, metrics.tpot_limit_s = bench.test.ttft_latency / 1e9, bench.test.tpot_latency / 1e9
        sut = LoadGenSut(loop, pool, dataset, bench, metrics)
        tasks.append(asyncio.create_task(watch_agents(pool, cfg.no_agent_timeout_s)))
        if cfg.progress_s > 0:
            tasks.append(asyncio.create_task(print_progress(metrics, cfg.progress_s, say)))

        staging = Staging(cfg.output, checked.stale)
        with staging.whole_or_nothing():
            folder = staging.start()
            audit = write_audit_config(folder) if cfg.compliance else None
        t2 = time.monotonic()
        metrics.phase = "loadgen"
        metrics.mark_started()
        tasks.append(asyncio.create_task(record_throughput(metrics)))
        tasks.append(asyncio.create_task(exact_total(metrics, folder)))
        try:
            await in_daemon_thread(sut.run, folder, audit, name=LOADGEN_THREAD)
        except BaseException:
            sut.abort()
            raise
        timings["loadgen"] = time.monotonic() - t2
        metrics.sample(force=True)
        snapshot = metrics.snapshot()
        if cfg.progress_s > 0:
            say(progress_line(snapshot))
    finally:
        for task in tasks:
            task.cancel()
        await watcher.stop()
        await pool.close()

    with staging.whole_or_nothing():
        written.check_loadgen_logs(folder)  # before anything reads them: LoadGen says nothing of a failed write
        # Named where it will be: what the user is told to open once the run's files are in place.
        summary = dataclasses.replace(read_summary(folder), path=cfg.output / SUMMARY_FILE)
        t3 = time.monotonic()
        metrics.phase = "accuracy"
        accuracy_lines, accuracy_passed = await asyncio.to_thread(evaluate_accuracy, cfg, folder, dataset,
                                                                  bench.benchmark)
        if accuracy_passed is not None:
            timings["accuracy"] = time.monotonic() - t3
        compliance_lines, compliance_passed = [], None
        if cfg.compliance:
            test06 = dataclasses.replace(compliance.check_test06(folder, scenario=bench.spec.loadgen),
                                         log=cfg.output / outputs.ACCURACY_LOG)
            compliance_lines, compliance_passed = test06.report().splitlines(), test06.passed
            written.write_text(folder / outputs.VERIFY_FILE, test06.verify_accuracy_txt())
    return RunResult(output=cfg.output, settings=bench, dataset=dataset, summary=summary, snapshot=snapshot,
                     duplicates=sut.duplicates, error=pool.failed, accuracy_lines=accuracy_lines,
                     compliance_lines=compliance_lines, timings_s=timings, staging=staging,
                     accuracy_passed=accuracy_passed, compliance_passed=compliance_passed, gave_up=pool.gave_up)


def write_audit_config(folder: Path) -> Path:
    """TEST06's audit.config for LoadGen; a failed write names the file (compliance's own error would not)."""
    with written.writing(folder / outputs.AUDIT_FILE):
        return compliance.write_audit_config(folder)


async def exact_total(metrics: RunMetrics, log_dir: Path) -> None:
    """Progress counts to what LoadGen really generated, once its log says, instead of the estimate."""
    metrics.expected = await wait_generated_count(log_dir)


def load_dataset(cfg: CoordinatorConfig, checked: Checked, pool: Pool) -> Dataset:
    """The run's samples for the ready agents: the checked file cut to their vocabulary and context, or
    synthetic prompts made for them."""
    agents = [s.capacity.status for s in pool.ready_agents()]
    vocab = min(s.model.vocab_size for s in agents)
    max_context = min(s.model.max_context for s in agents)
    if len({(s.model.name, s.model.vocab_size) for s in agents}) > 1:
        log.warning("agents serve different models: %s", sorted({s.model.name for s in agents}))
    longest = min(prompt.MAX_PROMPT_TOKENS, max_context - Dataset.max_new_tokens)  # loaders drop longer ones
    if checked.dataset is None:
        dataset = loaders.load("synthetic", max_samples=cfg.max_samples, vocab_size=vocab, seed=cfg.seed,
                                max_prompt_tokens=longest)
    else:
        dataset = loaders.fit_model(checked.dataset, vocab, longest, cfg.dataset)
    limit = max_context - dataset.max_new_tokens
    too_long = [i for i, p in enumerate(dataset.prompts) if len(p) > limit]
    if too_long:
        raise ValueError(f"{len(too_long)} prompts of {dataset.name} (e.g. #{too_long[0]}, "
                         f"{len(dataset.prompts[too_long[0]])} tokens) do not fit the agents' context of "
                         f"{max_context} tokens with {dataset.max_new_tokens} new tokens")
    need = kv_tokens(max(len(p) for p in dataset.prompts), dataset.max_new_tokens)
    room, address = max((s.capacity.kv_tokens_total, s.address) for s in pool.ready_agents())
    if need > room:
        raise ValueError(f"the longest prompt of {dataset.name} needs {need} KV tokens with its "
                         f"{dataset.max_new_tokens} new tokens, but the largest agent KV cache ({address}) holds "
                         f"{room}: give the agents more (--num-kv-blocks, --memory-fraction) or use shorter prompts")
    return dataset


def evaluate_accuracy(cfg: CoordinatorConfig, folder: Path, dataset: Dataset,
                      benchmark: benchmarks.Benchmark) -> tuple[list[str], bool | None]:
    """MLPerf ROUGE over the accuracy log in `folder` when the dataset has references, by the benchmark's
    targets: the table (written to accuracy.txt beside LoadGen's logs, after MLPerf's lines) and PASS/FAIL;
    (why not, None) when it cannot be scored."""
    if cfg.mode != "accuracy":
        return [], None
    if dataset.references is None:
        return ["accuracy: not scored: synthetic data has no reference summaries (ROUGE needs --dataset "
                "cnn_eval.json or CNN/DailyMail articles)"], None
    if cfg.tokenizer is None:
        return ["accuracy: not scored: give --tokenizer to decode the outputs (or run `llmbench accuracy` later)"], None
    from llmbench.coordinator.scoring import accuracy
    result = accuracy.evaluate(folder / outputs.ACCURACY_LOG, dataset, cfg.tokenizer, benchmark=benchmark)
    written.write_text(folder / outputs.ACCURACY_FILE, result.accuracy_txt())
    return result.table().splitlines(), result.passed


async def watch_agents(pool: Pool, timeout_s: float) -> None:
    """Fail the run if queries wait while no agent has been ready for timeout_s."""
    since: float | None = None
    while True:
        await asyncio.sleep(0.5)
        busy = pool.queue or any(s.inflight for s in pool.slots.values())
        if pool.ready_agents() or not busy:
            since = None
            continue
        since = since or time.monotonic()
        if time.monotonic() - since > timeout_s:
            errors = "; ".join(f"{s.address}: {s.counters.last_error}" for s in pool.slots.values()) or "none left"
            pool.gave_up = f"no agent ready for {timeout_s:g} s ({errors})"
            pool.fail_all(pool.gave_up)
            return


async def print_progress(metrics: RunMetrics, every_s: float, say: Callable[[str], None]) -> None:
    while True:
        await asyncio.sleep(every_s)
        say(progress_line(metrics.snapshot()))


LOADGEN_THREAD = "loadgen"


def loadgen_running() -> bool:
    return any(t.name == LOADGEN_THREAD and t.is_alive() for t in threading.enumerate())


def run_session(cfg: CoordinatorConfig, say: Callable[[str], None] = print,
                metrics: RunMetrics | None = None) -> RunResult:
    return asyncio.run(run_benchmark(cfg, metrics, say=say))
