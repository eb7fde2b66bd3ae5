"""Agents that come up mid-run are used without restarting the coordinator: one listed in --agents but
down at the start, and one killed and restarted on the same port."""
from __future__ import annotations

import re
import signal
import time

import pytest

from mesh_processes import Agent, Coordinator, check_accuracy_log, reserved_port

AGENT_ARGS = ("--max-batch", "8")  # few queries per agent, so the central queue outlasts the restarts


def wait_for_queries(agent: Agent, c: Coordinator, timeout: float = 20) -> float:
    """Seconds until the agent has received a query."""
    start = time.monotonic()
    while agent.status().queries_received_total == 0:
        assert time.monotonic() - start < timeout and c.proc.poll() is None, c.text
        time.sleep(0.05)
    return time.monotonic() - start


@pytest.mark.slow
def test_late_and_restarted_agents_get_work(tmp_path):
    folder = tmp_path / "agents"
    a, b = (Agent(folder, tokens_per_s=2000, args=AGENT_ARGS) for _ in range(2))
    agents = [a, b]
    try:
        with reserved_port() as late_port:  # held until the late agent listens: no other test takes it meanwhile
            late_address = f"127.0.0.1:{late_port}"
            c = Coordinator("--agents", f"{a.address},{b.address},{late_address}", "--connect-timeout", "1",
                            "--scenario", "Offline", "--mode", "accuracy", "--max-samples", "400",
                            "--output", str(tmp_path / "out"), "--progress", "1")
            c.wait_for(f"agent {re.escape(late_address)} did not answer within 1 s .*starting without it")
            c.wait_for("^LoadGen settings")

            late = Agent(folder, port=late_port, tokens_per_s=2000, args=AGENT_ARGS)
            agents.append(late)
        joined = wait_for_queries(late, c)
        print(f"late agent got its first query {joined:.2f} s after it started")

        a.signal(signal.SIGKILL)
        a.proc.wait(5)
        restarted = Agent(folder, port=int(a.address.rsplit(":", 1)[1]), tokens_per_s=2000, args=AGENT_ARGS)
        agents.append(restarted)
        rejoined = wait_for_queries(restarted, c)
        print(f"restarted agent got its first query {rejoined:.2f} s after it started")
        assert c.proc.poll() is None, "the run ended before the restarted agent could show it is used"

        assert c.finish() == 0, c.text
        check_accuracy_log(tmp_path / "out", 400, first_tokens=False)
        shares = dict(re.findall(r"(127\.0\.0\.1:\d+) (\d+)", c.text.split("Queries per agent: ")[1].splitlines()[0]))
        assert int(shares[late_address]) > 0 and len(shares) == 3
        # Named once by the session at the start ("agent A: model ..."), then logged ready after the restart.
        assert c.text.count(f"agent {a.address}: ") == 1 and c.text.count(f"agent {a.address} ready") == 1
    finally:
        for agent in agents:
            agent.stop()
