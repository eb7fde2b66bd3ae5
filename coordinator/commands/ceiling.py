"""The coordinator's own ceiling: tokens/s and queries/s it routes on one core, with K simulated agents.

    python -m llmbench.coordinator.commands.ceiling [--agents 8,32,128] [--queries 20000]

For each K it starts K simulated agents (`llmbench agent --engine simulated`, unpaced: they step as
fast as they can) on the other cores, pins itself to one core, then hands all queries to the dispatch
Pool at once (as LoadGen Offline does, without LoadGen) with CNN/DM-shaped prompts and 128 output
tokens each, and times until every query is back. Besides the wall rates it prints the coordinator's
CPU share of its core (near 100 %: the wall figure is the coordinator's ceiling; well below: the agents
were the limit), its idle share (agents connected, no queries: status streams), and the ceiling: the
tokens/s at which the core would be full, at the measured CPU cost per token on top of the idle share.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import os
import pstats
import time
from dataclasses import dataclass
from pathlib import Path
from tempfile import TemporaryDirectory

import numpy as np
import psutil

from llmbench.coordinator.mesh.agent_link import AgentLink, LinkConfig
from llmbench.coordinator.mesh.dispatch import Pool
from llmbench.coordinator.mesh.job import Job, wire_body
from llmbench.coordinator.observe.metrics import RunMetrics
from llmbench.coordinator.commands.run_local import start_agents, stop_agents
from llmbench.coordinator.data.synthetic import make_synthetic

SIM_VOCAB = 128256
WARMUP_QUERIES_PER_AGENT = 8
IDLE_S = 3.0
QUERIES_PER_AGENT = 400


@dataclass
class Figures:
    agents: int
    queries: int
    tokens: int
    wall_s: float
    cpu_s: float  # the coordinator process, all threads
    agents_cpu_s: float  # all agent processes together
    idle_cpu: float  # the coordinator's CPU share with the agents connected and no queries (status streams)
    agent_cores: int
    step_messages: int
    status_messages: int

    @property
    def ceiling(self) -> float:
        """Tokens/s with the core saturated: the idle share stays, the rest goes to tokens at the measured
        cost per token."""
        per_token = max(self.cpu_s - self.idle_cpu * self.wall_s, 1e-9) / self.tokens
        return (1 - self.idle_cpu) / per_token

    def row(self) -> str:
        w = self.wall_s
        return (f"| {self.agents} | {self.queries} | {self.tokens / w:,.0f} | {self.queries / w:,.0f} "
                f"| {100 * self.cpu_s / w:.0f} % | {100 * self.idle_cpu:.1f} % | {self.ceiling:,.0f} "
                f"| {100 * self.agents_cpu_s / w / self.agent_cores:.0f} % of {self.agent_cores} "
                f"| {self.step_messages / w:,.0f} | {self.tokens / max(self.step_messages, 1):.0f} "
                f"| {self.status_messages / w:,.0f} |")


HEADER = ("| agents | queries | tokens/s | queries/s | coordinator CPU (of 1 core) | idle CPU | ceiling tokens/s "
          "| agents' CPU (cores) | step messages/s | tokens per step message | status messages/s |\n"
          "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")


class Counter:
    """The Pool's listener: counts answers, turns outputs into the int32 arrays LoadGen would get."""

    def __init__(self) -> None:
        self.done = 0
        self.failed = 0
        self.tokens = 0
        self.target = 0
        self.all_done = asyncio.Event()

    def first_tokens(self, jobs: list[Job]) -> None:
        pass

    def completed(self, jobs: list[Job]) -> None:
        for job in jobs:
            self.tokens += np.asarray(job.tokens, dtype="<i4").size
            self.failed += bool(job.error)
        self.done += len(jobs)
        if self.done >= self.target:
            self.all_done.set()


def pin(cores: set[int]) -> None:
    """Every thread of this process (and threads and children it starts later) onto these cores."""
    for tid in os.listdir("/proc/self/task"):
        with contextlib.suppress(ProcessLookupError):  # a thread that just ended
            os.sched_setaffinity(int(tid), cores)


class CountingPool(Pool):
    """Counts the messages it handles (step results, status reports)."""
    steps = 0
    statuses = 0

    def on_step(self, link, step) -> None:
        self.steps += 1
        super().on_step(link, step)

    def on_status(self, link, status) -> None:
        self.statuses += 1
        super().on_status(link, status)


def cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system
    return total


async def drive(addresses: list[str], pids: list[int], agent_cores: int, prompts: list[np.ndarray], queries: int,
                max_new_tokens: int, status_interval_ms: int, profile: bool) -> Figures:
    link = LinkConfig(status_interval_ms=status_interval_ms)
    pool = CountingPool(lambda address, p: AgentLink(address, p, link), RunMetrics())
    counter = Counter()
    pool.listener = counter
    try:
        for address in addresses:
            pool.add_agent(address)
        await pool.wait_ready(30.0, 60.0)
        bodies = [wire_body(p, max_new_tokens, 1) for p in prompts]  # as the SUT does when LoadGen loads samples

        async def batch(n: int, start: int) -> None:
            counter.done, counter.tokens, counter.target = 0, 0, n
            counter.all_done.clear()
            pool.submit([Job(start + i, i % len(prompts), prompts[i % len(prompts)], max_new_tokens,
                             wire_body=bodies[i % len(prompts)]) for i in range(n)])
            await counter.all_done.wait()

        await batch(WARMUP_QUERIES_PER_AGENT * len(addresses), 0)
        idle = time.process_time()
        await asyncio.sleep(IDLE_S)
        idle = (time.process_time() - idle) / IDLE_S
        profiler = cProfile.Profile() if profile else None
        steps, statuses = pool.steps, pool.statuses
        wall, cpu, agents_cpu = time.perf_counter(), time.process_time(), cpu_seconds(pids)
        if profiler:
            profiler.enable()
        await batch(queries, 1 << 30)
        if profiler:
            profiler.disable()
        wall, cpu, agents_cpu = time.perf_counter() - wall, time.process_time() - cpu, cpu_seconds(pids) - agents_cpu
        if counter.failed:
            raise RuntimeError(f"{counter.failed} queries failed: {pool.failed}")
        if profiler:
            pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
        return Figures(len(addresses), queries, counter.tokens, wall, cpu, agents_cpu, idle, agent_cores,
                       pool.steps - steps, pool.statuses - statuses)
    finally:
        await pool.close()


def measure(agents: int, queries: int, max_new_tokens: int, agent_args: str, folder: Path,
            cores: list[int], status_interval_ms: int, profile: bool = False) -> Figures:
    """cores: this process's own core first, the agents' after it (the same one if there is only one)."""
    agent_cores = set(cores[1:]) or {cores[0]}
    pin(agent_cores)  # the agents inherit this
    args = argparse.Namespace(agents=agents, engine="simulated", tokens_per_s=1e12, agent_args=agent_args)
    local = start_agents(args, folder)
    try:
        pin({cores[0]})
        prompts = make_synthetic(1000, SIM_VOCAB).prompts
        return asyncio.run(drive([a.address for a in local], [a.process.pid for a in local], len(agent_cores),
                                 prompts, queries, max_new_tokens, status_interval_ms, profile))
    finally:
        stop_agents(local)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m llmbench.coordinator.commands.ceiling", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--agents", default="8,32,128", help="agent counts to measure, comma-separated")
    p.add_argument("--queries", type=int, default=20000,
                   help=f"queries per measurement, at least {QUERIES_PER_AGENT} per agent (so the queue stays backed up)")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--agent-args", default="--max-batch 512",
                   help="extra flags for every simulated agent (default: batches like an H200 agent's in Offline)")
    p.add_argument("--status-interval-ms", type=int, default=LinkConfig.status_interval_ms,
                   help="how often each agent reports its status to the coordinator")
    p.add_argument("--profile", action="store_true", help="cProfile the coordinator's loop thread (slows it)")
    args = p.parse_args(argv)
    try:
        counts = [int(k) for k in args.agents.split(",")]
    except ValueError:
        p.error(f"--agents {args.agents!r}: agent counts such as 8,32,128")
    if min(counts) < 1 or args.queries < 1:
        p.error("--agents and --queries must be positive")
    cores = sorted(os.sched_getaffinity(0))
    print(f"{len(cores)} cores; coordinator pinned to core {cores[0]}, agents on the rest; "
          f"{args.queries}+ queries of {args.max_new_tokens} tokens, CNN/DM-shaped prompts; agents {args.agent_args}",
          flush=True)
    rows = []
    with TemporaryDirectory() as tmp:
        for k in counts:
            folder = Path(tmp) / f"agents-{k}"
            folder.mkdir()
            rows.append(measure(k, max(args.queries, QUERIES_PER_AGENT * k), args.max_new_tokens, args.agent_args, folder, cores,
                                args.status_interval_ms, args.profile))
            print(rows[-1].row(), flush=True)
    print(HEADER)
    for r in rows:
        print(r.row())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
