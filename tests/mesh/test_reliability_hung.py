"""A hung agent (SIGSTOP) and a cut-off agent (a TCP proxy that starts dropping every byte, like a
network partition: no FIN, no RST) are detected by status staleness and HTTP/2 keepalives within
--agent-timeout and handled like a loss; the hung one is used again once it resumes."""
from __future__ import annotations

import re
import signal
import socket
import threading
import time

import grpc
import pytest

from llmbench.coordinator.mesh.agent_link import LinkConfig
from llmbench.proto import pb, rpc

from mesh_processes import Agent, Coordinator, check_accuracy_log

AGENT_TIMEOUT_S = 2.0
SAMPLES = 200


class BlackholeProxy:
    """Forwards 127.0.0.1:port to a target until cut(); from then on every byte in both directions is
    dropped while the connections stay open."""

    def __init__(self, target: str) -> None:
        host, port = target.rsplit(":", 1)
        self.target = (host, int(port))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self._cut = threading.Event()
        self._sockets: list[socket.socket] = [self.listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def cut(self) -> float:
        self._cut.set()
        return time.monotonic()

    def close(self) -> None:
        for s in self._sockets:
            s.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
                upstream = socket.create_connection(self.target)
            except OSError:
                return
            self._sockets += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                if not self._cut.is_set():
                    dst.sendall(data)
        except OSError:
            pass
        finally:
            if not self._cut.is_set():
                for s in (src, dst):
                    s.close()


def run_with_fault(tmp_path, agents: list[Agent], victim: Agent, victim_address: str, fault,
                   samples: int = SAMPLES) -> tuple[Coordinator, float]:
    """Offline accuracy run over agents (victim reached at victim_address); fault() strikes once the
    victim holds running queries and returns when it struck. Returns (coordinator, detection seconds)."""
    addresses = [victim_address if a is victim else a.address for a in agents]
    c = Coordinator("--agents", ",".join(addresses), "--agent-timeout", str(AGENT_TIMEOUT_S), "--scenario", "Offline",
                    "--mode", "accuracy", "--max-samples", str(samples), "--output", str(tmp_path / "out"),
                    "--progress", "1")
    c.wait_for("^LoadGen settings")
    deadline = time.monotonic() + 20
    while victim.status().running < 2:
        assert time.monotonic() < deadline, c.text
        time.sleep(0.05)
    struck = fault()
    detected = c.wait_for(f"agent {re.escape(victim_address)} lost") - struck
    return c, detected


@pytest.fixture
def agents(tmp_path):
    # A small batch keeps queries in the central queue, so a resumed agent has work to get.
    started = [Agent(tmp_path / "agents", tokens_per_s=1500, args=("--max-batch", "8")) for _ in range(3)]
    yield started
    for a in started:
        a.stop()


@pytest.mark.slow
def test_sigstopped_agent_is_lost_then_used_again(agents, tmp_path):
    victim = agents[0]
    c, detected = run_with_fault(tmp_path, agents, victim, victim.address, lambda: victim.signal(signal.SIGSTOP))
    reason = next(line for _, line in c.lines if f"agent {victim.address} lost" in line)
    print(f"SIGSTOP detected after {detected:.2f} s: {reason.strip()}")
    assert detected < AGENT_TIMEOUT_S + 1.5, reason
    victim.signal(signal.SIGCONT)
    before = victim.status().queries_received_total  # the old queries, dropped once it sees the hang-up
    deadline = time.monotonic() + 20
    while victim.status().queries_received_total == before:  # reconnected and given new work
        assert time.monotonic() < deadline and c.proc.poll() is None, c.text
        time.sleep(0.05)
    assert c.finish() == 0, c.text
    check_accuracy_log(tmp_path / "out", SAMPLES, first_tokens=False)
    # Named once by the session at the start ("agent A: model ..."), then logged ready once it came back.
    assert c.text.count(f"agent {victim.address}: ") == 1 and c.text.count(f"agent {victim.address} ready") == 1


@pytest.mark.slow
def test_cut_off_agent_is_lost(agents, tmp_path):
    victim = agents[0]
    proxy = BlackholeProxy(victim.address)
    try:
        c, detected = run_with_fault(tmp_path, agents, victim, proxy.address, proxy.cut, samples=100)
        reason = next(line for _, line in c.lines if f"agent {proxy.address} lost" in line)
        print(f"cut-off detected after {detected:.2f} s: {reason.strip()}")
        assert detected < AGENT_TIMEOUT_S + 1.5, reason
        assert c.finish() == 0, c.text
        check_accuracy_log(tmp_path / "out", 100, first_tokens=False)
        assert re.search(rf"Agent {re.escape(proxy.address)} lost 1 time\(s\), [1-9]\d* queries re-dispatched", c.text)
    finally:
        proxy.close()


def test_keepalive_alone_breaks_a_call_to_a_stopped_agent(tmp_path):
    """No status stream, no deadline: the coordinator's channel settings alone end a call whose agent
    stopped answering (HTTP/2 pings every agent_timeout/2, each allowed agent_timeout/2)."""
    agent = Agent(tmp_path, tokens_per_s=20)
    try:
        options = LinkConfig(agent_timeout_s=AGENT_TIMEOUT_S).channel_options()
        with grpc.insecure_channel(agent.address, options=options) as channel:
            replies = rpc.AgentStub(channel).Generate(pb.GenerateRequest(tokens=pb.TokenList(ids=[1]),
                                                                         max_new_tokens=5000, ignore_eos=True))
            next(replies)
            stopped = agent.signal(signal.SIGSTOP)
            with pytest.raises(grpc.RpcError) as err:
                for _ in replies:
                    pass
            broken = time.monotonic() - stopped
        print(f"keepalive ended the call {broken:.2f} s after SIGSTOP: {err.value.code()}: {err.value.details()}")
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE and broken < 2 * AGENT_TIMEOUT_S
    finally:
        agent.stop()
