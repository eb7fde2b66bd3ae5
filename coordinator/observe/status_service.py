"""The run as RunStatus messages: built from RunMetrics, served to watchers by Coordinator.WatchRun.

`StatusFeed` turns the metrics into RunStatus messages, each with the throughput points and log lines
its reader has not had yet; the local TUI reads one feed, and every WatchRun stream has its own, so
a watcher sees what the TUI shows. `StatusServer` is grpc's thread-pool server, apart from the run's
asyncio loop: a slow watcher never delays the dispatcher, and the last message (finished) still goes
out after the loop has ended.

Watchers are few and cheap, but a client that opens streams and never reads them must not lock the
operator out: `Watchers` admits at most MAX_WATCHERS streams, and a newcomer beyond that ends the oldest
stream of its own host, or else of the host that holds the most, so one host's idle streams make room
for any other watcher. Only when every stream is a different host's is a newcomer refused.
"""
from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent import futures

import grpc
from grpc_reflection.v1alpha import reflection

from llmbench.common.auth import ServerSecurity
from llmbench.common.malformed import SyncMalformedRequestInterceptor
from llmbench.common.ports import bind, host_for_grpc
from llmbench.coordinator.observe.metrics import AgentCounters, Percentiles, RunMetrics
from llmbench.proto import pb, rpc

DEFAULT_INTERVAL_MS = 500
MIN_INTERVAL_MS = 100
MAX_WATCHERS = 16
# grpc's own cap and thread pool: room beyond MAX_WATCHERS for newcomers to be admitted (ending an old
# stream) and for reflection calls.
GRPC_CONCURRENCY = 2 * MAX_WATCHERS
COORDINATOR_SERVICE = pb.DESCRIPTOR.services_by_name["Coordinator"].full_name


def _latency(p: Percentiles, limit_s: float) -> pb.LatencySummary:
    return pb.LatencySummary(count=p.count, p50_s=p.p50, p90_s=p.p90, p99_s=p.p99, max_s=p.max, limit_s=limit_s)


def _agent(a: AgentCounters) -> pb.AgentRunStatus:
    msg = pb.AgentRunStatus(address=a.address, state=a.state, queries_sent=a.queries_sent,
                            queries_done=a.queries_done, inflight=a.inflight, output_tokens=a.output_tokens,
                            redispatched=a.redispatched, losses=a.losses, last_error=a.last_error)
    if a.status is not None:
        msg.status.CopyFrom(a.status)
    return msg


class StatusFeed:
    """RunStatus messages for one reader: each carries only the points and lines it has not had."""

    def __init__(self, metrics: RunMetrics) -> None:
        self.metrics = metrics
        self._last_point_s = float("-inf")
        self._lines_seen = 0

    def next(self) -> pb.RunStatus:
        m = self.metrics
        finished, phase, outcome = m.finished, m.phase, m.outcome  # before the counters: a last message has the last counts
        s = m.snapshot()
        points = [p for p in m.throughput() if p.elapsed_s > self._last_point_s]
        if points:
            self._last_point_s = points[-1].elapsed_s
        first_line, lines = m.log_since(self._lines_seen)
        self._lines_seen = first_line + len(lines) - 1
        return pb.RunStatus(
            run_id=m.run_id, scenario=m.scenario, mode=m.mode, phase=phase, output_dir=m.output_dir,
            elapsed_s=s.elapsed_s, expected=s.expected, issued=s.issued, completed=s.completed, failed=s.failed,
            queued=s.queued, inflight=s.inflight, redispatched=s.redispatched, output_tokens=s.output_tokens,
            tokens_per_s=s.tokens_per_s, samples_per_s=s.samples_per_s,
            eta_s=s.eta_s if s.eta_s is not None else -1.0,
            ttft=_latency(s.ttft_s, m.ttft_limit_s), tpot=_latency(s.tpot_s, m.tpot_limit_s),
            agents=[_agent(a) for a in s.agents],
            throughput=[pb.ThroughputPoint(elapsed_s=p.elapsed_s, tokens_per_s=p.tokens_per_s,
                                           samples_per_s=p.samples_per_s) for p in points],
            log_seq=first_line, log_lines=lines, finished=finished, outcome=outcome, timestamp=time.time())


def peer_host(peer: str) -> str:
    """grpc's peer ("ipv4:10.0.0.5:5123", "ipv6:[::1]:5123", "unix:...") without its port."""
    kind, _, address = peer.partition(":")
    if kind in ("ipv4", "ipv6"):
        return address.rsplit(":", 1)[0]
    return peer


class Watch:
    """One WatchRun stream: where it comes from, and the event that ends it early."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.ended = threading.Event()
        self.why = ""


class Watchers:
    """The open WatchRun streams, oldest first; at most `limit`."""

    def __init__(self, limit: int = MAX_WATCHERS) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._streams: list[Watch] = []

    def admit(self, host: str) -> Watch | None:
        """A new stream from host, ending another if full (see the module docstring); None: refused."""
        with self._lock:
            if len(self._streams) >= self.limit:
                counts = Counter(w.host for w in self._streams)
                victim = host if host in counts else max(counts, key=counts.__getitem__)
                if victim != host and counts[victim] < 2:
                    return None
                oldest = next(w for w in self._streams if w.host == victim)
                self._streams.remove(oldest)
                oldest.why = f"{self.limit} run watchers are open: a newer one from {host} took this one's place"
                oldest.ended.set()
            watch = Watch(host)
            self._streams.append(watch)
            return watch

    def leave(self, watch: Watch) -> None:
        with self._lock:
            if watch in self._streams:
                self._streams.remove(watch)

    def end_all(self) -> None:
        with self._lock:
            for watch in self._streams:
                watch.ended.set()

    def __len__(self) -> int:
        with self._lock:
            return len(self._streams)


class _Servicer(rpc.CoordinatorServicer):
    def __init__(self, metrics: RunMetrics, stopping: threading.Event, watchers: Watchers) -> None:
        self.metrics = metrics
        self.stopping = stopping
        self.watchers = watchers

    def WatchRun(self, request: pb.WatchRunRequest, context: grpc.ServicerContext):
        watch = self.watchers.admit(peer_host(context.peer()))
        if watch is None:
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                          f"{self.watchers.limit} run watchers from as many hosts are open; try later")
        try:
            interval = max(request.interval_ms or DEFAULT_INTERVAL_MS, MIN_INTERVAL_MS) / 1000
            feed = StatusFeed(self.metrics)
            while context.is_active():
                status = feed.next()
                yield status
                if status.finished:
                    return
                if watch.ended.wait(interval):
                    if self.stopping.is_set():  # the coordinator is leaving: one last message
                        yield feed.next()
                        return
                    context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, watch.why)
        finally:
            self.watchers.leave(watch)


class StatusServer:
    """Coordinator.WatchRun (and reflection) on host:port; port 0 picks a free one."""

    def __init__(self, metrics: RunMetrics, host: str = "127.0.0.1", port: int = 0,
                 security: ServerSecurity | None = None) -> None:
        self.metrics = metrics
        self.security = security or ServerSecurity()
        self.host = host
        self.port = port
        self._stopping = threading.Event()
        self._server: grpc.Server | None = None
        self.watchers = Watchers()

    @property
    def address(self) -> str:
        return f"{host_for_grpc(self.host)}:{self.port}"

    def start(self) -> int:
        server = grpc.server(futures.ThreadPoolExecutor(GRPC_CONCURRENCY, thread_name_prefix="watch-run"),
                             interceptors=[*self.security.interceptors(aio=False), SyncMalformedRequestInterceptor()],
                             maximum_concurrent_rpcs=GRPC_CONCURRENCY, options=[("grpc.so_reuseport", 0)])
        rpc.add_CoordinatorServicer_to_server(_Servicer(self.metrics, self._stopping, self.watchers), server)
        reflection.enable_server_reflection([COORDINATOR_SERVICE, reflection.SERVICE_NAME], server)
        port = bind(server, self.host, self.port, self.security.credentials(), what="serve the run status")
        server.start()
        self._server, self.port = server, port
        return port

    def stop(self, grace_s: float = 2.0) -> None:
        """Streams send their last message (finished, if the run is over) and end."""
        self._stopping.set()
        self.watchers.end_all()
        if self._server is not None:
            self._server.stop(grace_s).wait()
            self._server = None

