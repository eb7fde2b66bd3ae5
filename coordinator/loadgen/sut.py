"""LoadGen glue: the SUT and QSL callbacks, and the answers back to LoadGen.

LoadGen calls issue_queries on its own thread; the batch is handed to the asyncio loop with
call_soon_threadsafe and never touches an aio object there. Answers come from the loop (the
dispatcher's Listener calls): first tokens with FirstTokenComplete where the scenario table says the
scenario reports them (not Offline, which measures throughput), completions with
QuerySamplesComplete, token ids as little-endian int32 with n_tokens.
A ledger of outstanding sample ids guarantees each sample is answered once, first token included.
"""
from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import mlperf_loadgen as lg
import numpy as np

from llmbench.coordinator.mesh.dispatch import Pool
from llmbench.coordinator.mesh.job import Job, wire_body
from llmbench.coordinator.observe.metrics import RunMetrics
from llmbench.coordinator.data.dataset import Dataset
from llmbench.coordinator.loadgen.settings import BenchSettings

log = logging.getLogger("llmbench.coordinator")
TOKEN_DTYPE = np.dtype("<i4")


class LoadGenSut:
    def __init__(self, loop: asyncio.AbstractEventLoop, pool: Pool, dataset: Dataset, settings: BenchSettings,
                 metrics: RunMetrics) -> None:
        self.loop = loop
        self.pool = pool
        self.dataset = dataset
        self.settings = settings
        self.metrics = metrics
        self.report_first_tokens = settings.spec.reports_first_tokens
        # Queries carry the scenario's TPOT limit (where it holds), so agents size their steps to it.
        self.tpot_limit_ms = settings.test.tpot_latency / 1e6 if settings.spec.latency_limits else 0.0
        self._outstanding: set[int] = set()  # sample ids issued and not yet completed
        self._first_sent: set[int] = set()
        self._wire_bodies: dict[int, bytes] = {}  # QSL index -> its query, encoded while LoadGen loads samples
        self.duplicates = 0  # answers refused by the ledger (a bug if ever non-zero)
        self.aborted = False  # the loop is gone: LoadGen's thread answers what it still issues
        pool.listener = self

    # --- LoadGen thread ------------------------------------------------------------------------
    def issue_queries(self, samples: list) -> None:
        ds = self.dataset
        bodies = self._wire_bodies
        jobs = [Job(s.id, s.index, ds.prompts[s.index], ds.max_new_tokens, ds.min_new_tokens, self.tpot_limit_ms,
                    wire_body=bodies.get(s.index, b"")) for s in samples]
        if not self.aborted:
            try:
                self.loop.call_soon_threadsafe(self._submit, jobs)
                return
            except RuntimeError:  # the loop closed under us; an exception must not reach LoadGen
                self.aborted = True
        empty = [lg.QuerySampleResponse(j.sample_id, 0, 0, 0) for j in jobs]
        if self.report_first_tokens:
            lg.FirstTokenComplete(empty)
        lg.QuerySamplesComplete(empty)

    def abort(self) -> None:
        """The run is over without LoadGen (interrupt, fatal error): stop feeding the loop."""
        self.aborted = True

    def flush_queries(self) -> None:
        pass  # every query is already on its way

    def load_samples(self, indices: list[int]) -> None:
        """QSL: encode these samples' queries now, before the timed run, not at dispatch."""
        ds = self.dataset
        for i in indices:
            self._wire_bodies[i] = wire_body(ds.prompts[i], ds.max_new_tokens, ds.min_new_tokens, self.tpot_limit_ms)

    def unload_samples(self, indices: list[int]) -> None:
        for i in indices:
            self._wire_bodies.pop(i, None)

    # --- loop thread ---------------------------------------------------------------------------
    def _submit(self, jobs: list[Job]) -> None:
        self._outstanding.update(j.sample_id for j in jobs)
        self.metrics.record_issued(len(jobs))
        self.pool.submit(jobs)

    def first_tokens(self, jobs: list[Job]) -> None:
        if not self.report_first_tokens:
            return
        fresh = [j for j in jobs if j.sample_id in self._outstanding and j.sample_id not in self._first_sent]
        self.duplicates += len(jobs) - len(fresh)
        if not fresh:
            return
        arrays = [np.asarray(j.tokens[:1], dtype=TOKEN_DTYPE) for j in fresh]
        lg.FirstTokenComplete([lg.QuerySampleResponse(j.sample_id, a.ctypes.data, a.nbytes, a.size)
                               for j, a in zip(fresh, arrays)])
        self._first_sent.update(j.sample_id for j in fresh)

    def completed(self, jobs: list[Job]) -> None:
        fresh = [j for j in jobs if j.sample_id in self._outstanding]
        if len(fresh) != len(jobs):
            self.duplicates += len(jobs) - len(fresh)
            log.error("refused %d duplicate completions", len(jobs) - len(fresh))
        if self.report_first_tokens:
            self.first_tokens([j for j in fresh if j.sample_id not in self._first_sent])  # failed before a token
        arrays = [np.asarray(j.tokens, dtype=TOKEN_DTYPE) for j in fresh]
        responses = [lg.QuerySampleResponse(j.sample_id, a.ctypes.data, a.nbytes, a.size)
                     for j, a in zip(fresh, arrays)]
        for j in fresh:
            self._outstanding.discard(j.sample_id)
            self._first_sent.discard(j.sample_id)
        if responses:
            lg.QuerySamplesComplete(responses)  # arrays stay alive until it returns

    # --- the test (blocking: run it off the loop) ----------------------------------------------
    def run(self, output_dir: Path, audit_config: Path | None = None) -> None:
        output_dir.mkdir(parents=True, exist_ok=True)
        log_settings = lg.LogSettings()
        log_settings.log_output.outdir = str(output_dir)
        log_settings.log_output.copy_summary_to_stdout = False
        log_settings.enable_trace = False
        total = len(self.dataset)
        sut = lg.ConstructSUT(self.issue_queries, self.flush_queries)
        qsl = lg.ConstructQSL(total, min(total, self.settings.performance_sample_count), self.load_samples,
                              self.unload_samples)
        try:
            # Always an explicit audit file: LoadGen would otherwise read a stray ./audit.config.
            audit = audit_config or output_dir / "no-audit.config"
            lg.StartTestWithLogSettings(sut, qsl, self.settings.test, log_settings, str(audit))
        finally:
            lg.DestroyQSL(qsl)
            lg.DestroySUT(sut)
