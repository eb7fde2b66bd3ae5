"""A local agent of `llmbench run` that dies is reported at once, with its status or signal (one was
OOM-killed while loading and the run said nothing for 15 minutes). Before the LoadGen test, or once no
agent is left, the run ends with status 2 ("could not go on"); during the test, while another agent is
left, it goes on and every sample is still answered exactly once.

Unit level: DeathWatch over real short-lived processes, ending a session-like task. End to end: `llmbench run` with real agents,
SIGKILLed mid-run, and agents that fail while loading their model.
"""
from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import psutil
import pytest

from llmbench.coordinator.commands.agent_deaths import DeathWatch, exit_reason
from llmbench.coordinator.commands.run_local import LISTENING, LocalAgent, stop_agents
from llmbench.coordinator.observe.metrics import RunMetrics
from llmbench.coordinator.run.abandon import Abandoned, abandonable
from llmbench.proto import pb, rpc
from mesh_processes import CLI, Coordinator, check_accuracy_log


def local_agent(folder: Path, i: int, *cmd: str) -> LocalAgent:
    log = folder / f"agent-{i}.log"
    log.write_text(f"# header\nlast words of agent {i}\n")
    return LocalAgent(subprocess.Popen(list(cmd or ("sleep", "600"))), log)


def wait_until(condition, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def session(kill=lambda: None) -> None:
    """What run_benchmark's task does: its body in abandonable(); here the body kills, then waits 120 s."""
    async def body() -> None:
        async with abandonable():
            kill()
            await asyncio.sleep(120)
    asyncio.run(body())


def test_exit_reasons():
    assert exit_reason(-signal.SIGKILL) == "killed by SIGKILL (out of memory?)"
    assert exit_reason(-signal.SIGSEGV) == "killed by SIGSEGV"
    assert (exit_reason(2), exit_reason(0)) == ("status 2", "status 0")


def test_an_agent_that_dies_before_loadgen_ends_the_run_at_once(tmp_path, caplog):
    agents = [local_agent(tmp_path, i) for i in range(2)]
    try:
        with DeathWatch(RunMetrics(phase="agents")) as deaths:
            deaths.watch(agents)
            with pytest.raises(Abandoned, match=r"^agent-1 exited, killed by SIGKILL \(out of memory\?\),$"):
                session(agents[1].process.kill)  # without the watch: 120 s, no raise
    finally:
        stop_agents(agents)
    assert [r.getMessage() for r in caplog.records] == [
        f"agent-1 exited: killed by SIGKILL (out of memory?); its log: {tmp_path / 'agent-1.log'}"]


def test_a_death_before_the_session_ends_it_at_its_start_on_any_thread_and_is_forgotten_after(tmp_path):
    agents = [local_agent(tmp_path, 0)]
    errors: list[BaseException] = []

    def on_another_thread() -> None:  # as under the TUI, where the session's loop is not the main thread's
        try:
            session()
        except BaseException as exc:
            errors.append(exc)
    with DeathWatch(RunMetrics(phase="agents")) as deaths:
        deaths.watch(agents)
        agents[0].process.kill()
        wait_until(lambda: deaths.lost, "the death was not seen")
        worker = threading.Thread(target=on_another_thread)
        worker.start()
        worker.join(60)
    assert [str(e) for e in errors] == ["agent-0 exited, killed by SIGKILL (out of memory?),"], errors
    assert isinstance(errors[0], Abandoned)

    async def later_run() -> str:
        async with abandonable():
            await asyncio.sleep(0.01)
        return "ran"
    assert asyncio.run(later_run()) == "ran"


def test_during_loadgen_the_run_goes_on_until_no_agent_is_left(tmp_path, caplog):
    agents = [local_agent(tmp_path, i) for i in range(2)]
    try:
        with DeathWatch(RunMetrics(phase="loadgen")) as deaths:
            deaths.watch(agents)
            agents[0].process.kill()
            wait_until(lambda: deaths.exited, "agent-0's death was not seen")
            assert deaths.lost == "" and "agent-0 exited: killed by SIGKILL" in caplog.text
            with pytest.raises(Abandoned, match=r"^every local agent exited, the last agent-1, killed by SIGKILL \(out of memory\?\),$"):
                session(agents[1].process.kill)
    finally:
        stop_agents(agents)


def test_an_agents_status_and_last_line_are_said_and_stopped_agents_are_no_news(tmp_path, caplog):
    failing = local_agent(tmp_path, 0, sys.executable, "-c", "import sys; sys.exit(2)")
    stopped_alone = local_agent(tmp_path, 1, "true")  # exit 0: stopped by a SIGTERM that reached run too
    ours = local_agent(tmp_path, 2)
    with DeathWatch(RunMetrics(phase="loadgen")) as deaths:
        deaths.watch([failing, stopped_alone, ours])
        wait_until(lambda: len(deaths.exited) == 2, "the two exits were not seen")
        stop_agents([ours])
        time.sleep(0.5)  # room for a report that must not come
    assert not deaths.lost and sorted(a.name for a in deaths.exited) == ["agent-0", "agent-1"]
    assert sorted(r.getMessage() for r in caplog.records) == [
        f"agent-0 exited: status 2 (last words of agent 0); its log: {tmp_path / 'agent-0.log'}",
        f"agent-1 exited: status 0; its log: {tmp_path / 'agent-1.log'}"]


def test_a_stop_from_outside_before_loadgen_is_left_to_runs_own_handler(tmp_path):
    agents = [local_agent(tmp_path, 0, "true")]
    with DeathWatch(RunMetrics(phase="agents")) as deaths:
        deaths.watch(agents)
        wait_until(lambda: deaths.exited, "the exit was not seen")
    assert deaths.lost == ""


# --- end to end ------------------------------------------------------------------------------------

def agent_processes(run: subprocess.Popen, out: Path, n: int) -> dict[str, psutil.Process]:
    """agent-N -> its process, by the port its log says it listens on."""
    ports = {f"agent-{i}": int(LISTENING.search((out / f"agent-{i}.log").read_text())[1].rsplit(":", 1)[1])
             for i in range(n)}
    found = {}
    for child in psutil.Process(run.pid).children():
        listening = {c.laddr.port for c in child.net_connections("tcp") if c.status == psutil.CONN_LISTEN}
        found.update({name: child for name, port in ports.items() if port in listening})
    assert len(found) == n, (ports, found)
    return found


def running(out: Path, name: str) -> int:
    address = LISTENING.search((out / f"{name}.log").read_text())[1]
    with grpc.insecure_channel(address) as channel:
        return next(rpc.AgentStub(channel).WatchStatus(pb.StatusRequest(), timeout=5)).running


def start_run(out: Path, *flags: str) -> Coordinator:
    run = Coordinator("--engine", "simulated", "--agents", "2", "--tokens-per-s", "1500", "--scenario", "Offline",
                      "--mode", "accuracy", "--max-samples", "60", "--no-tui", "--progress", "1", "--output", str(out),
                      *flags, command="run")
    run.wait_for("^LoadGen settings")
    return run


@pytest.mark.slow
def test_sigkill_mid_run_is_reported_at_once_and_the_run_goes_on(tmp_path):
    out = tmp_path / "out"
    run = start_run(out)
    try:
        wait_until(lambda: running(out, "agent-1") >= 2, "agent-1 got no queries")  # it holds queries part done
        agent_processes(run.proc, out, 2)["agent-1"].kill()
        killed = time.monotonic()
        reported = run.wait_for(r"E llmbench\.run: agent-1 exited: killed by SIGKILL \(out of memory\?\); its log: "
                                + re.escape(str(out / "agent-1.log")))
        assert run.finish() == 0, run.text
    finally:
        run.proc.kill()
    assert reported - killed < 30  # at once; the slack is for a busy machine (the run's own timeouts are 60 s up)
    assert reported < run.wait_for("^Wall time")  # while the run was still going
    assert re.search(r"agent 127\.0\.0\.1:\d+ lost", run.text) and "re-dispatched" in run.text, run.text
    check_accuracy_log(out, 60, first_tokens=False)  # every sample once, whole, as an uninterrupted run gives


@pytest.mark.slow
def test_when_every_agent_is_killed_the_run_ends_at_once_with_status_2(tmp_path):
    out = tmp_path / "out"
    run = start_run(out, "--no-agent-timeout", "600")  # the coordinator alone would wait 10 minutes for one
    try:
        wait_until(lambda: running(out, "agent-0") >= 1, "agent-0 got no queries")
        for agent in agent_processes(run.proc, out, 2).values():
            agent.kill()
        assert run.finish(timeout=120) == 2, run.text
    finally:
        run.proc.kill()
    assert len(re.findall(r"agent-\d exited: killed by SIGKILL", run.text)) >= 1, run.text
    errors = [line for line in run.text.splitlines() if "error: " in line]
    assert len(errors) == 1 and re.fullmatch(
        r"llmbench run: error: the run could not go on: every local agent exited, the last agent-\d, killed by "
        rf"SIGKILL \(out of memory\?\), after \d+ of \d+ samples; agent-N\.log in {re.escape(str(out.resolve()))}",
        errors[0]), run.text


@pytest.mark.slow
def test_agents_that_fail_while_loading_end_the_run_at_once_with_status_2(tmp_path):
    """They listen, then fail to size their KV cache: the coordinator alone waits --ready-timeout (900 s)."""
    out = tmp_path / "out"
    r = subprocess.run([*CLI, "run", "--agents", "2", "--no-tui", "--output", str(out),
                        "--agent-args", "--num-kv-blocks 100000000"], capture_output=True, text=True, timeout=180)
    assert r.returncode == 2, r.stdout + r.stderr
    assert re.search(r"E llmbench\.run: agent-\d exited: status 2 \(llmbench agent: error: --num-kv-blocks 100000000 "
                     r"asks for \d+ bytes", r.stderr), r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("llmbench run: error: ")]
    assert len(errors) == 1 and re.fullmatch(
        r"llmbench run: error: the run could not go on: agent-\d exited, status 2, before the LoadGen test "
        rf"\(phase \w+\); agent-N\.log in {re.escape(str(out.resolve()))}", errors[0]), r.stderr
