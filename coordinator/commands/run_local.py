"""`llmbench run`: start local agents, run the coordinator against them, stop them. The demo.

With no arguments: two agents on the tiny random model, Server scenario over the synthetic
CNN/DM-shaped dataset, with demo-scaled LoadGen settings (printed as such), results in
./results/<timestamp>. Agents are subprocesses (`llmbench agent --port 0`); each one's output goes
to agent-N.log in the results folder, and all are stopped on exit, error or Ctrl-C. With --gpus, one
agent per local GPU, each seeing only its own (CUDA_VISIBLE_DEVICES); without, they share the host's
cores and memory (host_share.py). One that exits on its own is reported at once (agent_deaths.py).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from llmbench.coordinator.commands import host_share
from llmbench.coordinator.commands.agent_deaths import DeathWatch, exit_reason, last_line
from llmbench.coordinator.run import abandon, exits
from llmbench.coordinator.commands.coordinator import (LiveFront, add_run_arguments, check_find_peak, config_from_args,
                                                       find_peak, output_folder, report, run_front, submission_runs)
from llmbench.coordinator.run.gpus import SPEC_HELP, select_gpus
from llmbench.coordinator.observe.metrics import RunMetrics
from llmbench.coordinator.run.outputs import AGENT_LOG_HEADER
from llmbench.coordinator.run.preflight import check_range

LISTENING = re.compile(r"llmbench-agent: listening on (\S+)")
AGENT_START_TIMEOUT_S = 120.0
AGENT_STOP_GRACE_S = 10.0
MAX_AGENTS = 256
_AGENT_MAIN = "import sys; from llmbench.cli import main; sys.exit(main())"


@dataclass
class LocalAgent:
    process: subprocess.Popen
    log_path: Path
    address: str = ""
    gpu: str = ""  # its CUDA_VISIBLE_DEVICES, "" when not given one
    stopping: bool = False  # stop_agents is stopping it: its exit is expected

    @property
    def name(self) -> str:
        return self.log_path.stem  # agent-N

    def describe(self) -> str:
        return f"{self.address} (GPU {self.gpu})" if self.gpu else self.address


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_run_arguments(p)
    p.add_argument("--agents", type=int, help="how many local agents to start (default 2; with --gpus one per GPU)")
    p.add_argument("--gpus", help=f"one agent per local GPU: {SPEC_HELP}")
    p.add_argument("--model", default="tiny", help="model folder or preset for the agents (default tiny)")
    p.add_argument("--engine", choices=["paged", "simulated"], default="paged",
                   help="paged: the real engine; simulated: fake tokens (no model) for load tests")
    p.add_argument("--tokens-per-s", type=float, default=2000.0, help="simulated engine: tokens/s per agent")
    p.add_argument("--agent-args", default="", help="extra flags for every agent, e.g. '--max-batch 32'")
    p.add_argument("--mlperf-settings", action="store_true",
                   help="use MLPerf's settings as they are (600 s minimum) instead of the demo scale")


def agent_command(args: argparse.Namespace, on_gpu: bool = False, shared: list[str] | None = None) -> list[str]:
    """The agent's command line; `shared` (its share of the host) goes before --agent-args, where the
    user's own flags come last and so win."""
    cmd = [sys.executable, "-c", _AGENT_MAIN, "agent", "--host", "127.0.0.1", "--port", "0", "--engine", args.engine]
    if args.engine == "simulated":
        cmd += ["--tokens-per-s", str(args.tokens_per_s)]
    else:
        cmd += ["--model", args.model] + (["--device", "cuda"] if on_gpu else [])  # never a silent CPU fallback
    return cmd + (shared or []) + args.agent_args.split()


def start_agents(args: argparse.Namespace, output: Path, gpus: list[str] | None = None,
                 shared: list[str] | None = None) -> list[LocalAgent]:
    """Start args.agents agents, or one per GPU id in `gpus` (its CUDA_VISIBLE_DEVICES), and wait for each
    one's listening line (not for the model: the coordinator waits for health SERVING). If one fails,
    the others are stopped. `shared`: flags for every agent without a GPU of its own (host_share)."""
    count = len(gpus) if gpus else args.agents
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", host_share.threads_per_agent(count))
    agents: list[LocalAgent] = []
    try:
        for i in range(count):
            gpu = gpus[i] if gpus else ""
            log_path = output / f"agent-{i}.log"
            command = agent_command(args, on_gpu=bool(gpu), shared=None if gpu else shared)
            with open(log_path, "wb") as log_file:
                log_file.write(f"{AGENT_LOG_HEADER} {i}{' on GPU ' + gpu if gpu else ''}: "
                               f"{' '.join(command[3:])}\n".encode())
                log_file.flush()
                proc = subprocess.Popen(command, stdout=log_file,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        env={**env, "CUDA_VISIBLE_DEVICES": gpu} if gpu else env)
            agents.append(LocalAgent(proc, log_path, gpu=gpu))
        wait_listening(agents)
    except BaseException:
        stop_agents(agents)
        raise
    return agents


def wait_listening(agents: list[LocalAgent]) -> None:
    deadline = time.monotonic() + AGENT_START_TIMEOUT_S
    for agent in agents:
        while not agent.address:
            match = LISTENING.search(agent.log_path.read_text(errors="replace"))
            if match:
                agent.address = match.group(1)
            elif agent.process.poll() is not None:
                raise RuntimeError(f"{agent.name} exited: {exit_reason(agent.process.returncode)}: "
                                   f"{last_line(agent.log_path)}")
            elif time.monotonic() > deadline:
                raise TimeoutError(f"agent {agent.log_path.name} did not start listening within "
                                   f"{AGENT_START_TIMEOUT_S:g} s (see {agent.log_path})")
            else:
                time.sleep(0.05)


def stop_agents(agents: list[LocalAgent]) -> None:
    """SIGTERM (agents finish running queries within their grace), then SIGKILL stragglers."""
    for agent in agents:
        agent.stopping = True  # first, for all: an agent's exit from here on is no news (DeathWatch)
    for agent in agents:
        if agent.process.poll() is None:
            agent.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + AGENT_STOP_GRACE_S + 5
    for agent in agents:
        try:
            agent.process.wait(max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            agent.process.kill()
            agent.process.wait()


def check_run_flags(args: argparse.Namespace, gpus: list[str] | None) -> None:
    if gpus is not None and args.agents not in (None, len(gpus)):
        raise ValueError(f"--agents {args.agents} and --gpus {args.gpus} ({len(gpus)} GPUs) disagree: "
                         "--gpus starts one agent per GPU")
    if args.agents is not None and not 1 <= args.agents <= MAX_AGENTS:
        raise ValueError(f"--agents must be >= 1 and <= {MAX_AGENTS}, got {args.agents}")
    if args.engine == "simulated":
        check_range("--tokens-per-s", args.tokens_per_s, 0, 1e9)


def run(args: argparse.Namespace, live: LiveFront | None = None) -> int:
    metrics, output = RunMetrics(), output_folder(args)
    with exits.sigterm_interrupts(), DeathWatch(metrics) as deaths:
        agents: list[LocalAgent] = []
        try:
            return run_with_agents(args, live, metrics, output, agents, deaths)
        except abandon.Abandoned as exc:  # the agents died (DeathWatch)
            stop_agents(agents)
            error = RuntimeError(f"the run could not go on: {exc} {exits.stopped_when(exits.phase_reached(metrics), metrics)}"
                                 f"; agent-N.log in {output.resolve()}")
            exits.leave_if_loadgen_running(error, "run")
            raise error from None
        except KeyboardInterrupt as exc:
            stop_agents(agents)
            return exits.interrupted(exc, output, metrics, "run")
        except BaseException as exc:
            stop_agents(agents)
            error = exits.after_failure(exc, output, metrics, "run")
            exits.leave_if_loadgen_running(error, "run")
            if error is exc:
                raise
            raise error from exc


def run_with_agents(args: argparse.Namespace, live: LiveFront | None, metrics: RunMetrics, output: Path,
                    agents: list[LocalAgent], deaths: DeathWatch) -> int:
    """Everything is checked before the agents start (into `agents`, which the caller stops; `deaths`
    watches them)."""
    gpus = select_gpus(args.gpus) if args.gpus is not None else None
    check_run_flags(args, gpus)
    check_find_peak(args)
    args.agents = len(gpus) if gpus is not None else 2 if args.agents is None else args.agents
    args.demo = not args.mlperf_settings
    cfg = config_from_args(args, "", output)
    started = time.monotonic()
    print(f"llmbench run: {args.agents} local agents{' on GPUs ' + ','.join(gpus) if gpus else ''} ({args.engine} engine"
          f"{', model ' + args.model if args.engine == 'paged' else ''}), {cfg.scenario} {args.mode}, "
          f"results in {output}", flush=True)
    shared, line = ([], "") if gpus else host_share.memory_share(args, args.agents)
    if line:
        print(line, flush=True)
    agents += start_agents(args, output, gpus, shared)
    metrics.timings_s["agent processes"] = time.monotonic() - started
    deaths.watch(agents)  # from here on, an agent that exits is reported at once
    print(f"agents listening on {', '.join(a.describe() for a in agents)}", flush=True)
    cfg = dataclasses.replace(cfg, agents=",".join(a.address for a in agents))
    if cfg.demo is not None:
        print("Demo scale: LoadGen settings are scaled down so the run takes minutes on a CPU; "
              "the changes are listed below and in the summary.", flush=True)
    if args.find_peak or args.submission_runs:
        code = (find_peak if args.find_peak else submission_runs)(cfg, args, say=lambda line: print(line, flush=True))
        stop_agents(agents)
        print(f"Wall time {time.monotonic() - started:.1f} s; results: {output.resolve()} (one folder per run)")
        return code
    result = run_front(cfg, args, metrics, say=lambda line: print(line, flush=True), live=live)
    stop_agents(agents)
    code = report(result, more_files=", agent-N.log")
    phases = ", ".join(f"{name} {secs:.1f} s" for name, secs in result.timings_s.items())
    print(f"Wall time {time.monotonic() - started:.1f} s ({phases}, agents stopped)")
    return code
