"""sd_notify over a real AF_UNIX datagram socket, the way systemd's manager receives it."""
import asyncio
import os
import signal
import socket
import struct
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from llmbench.agent.server import sdnotify


@pytest.fixture
def manager(tmp_path, monkeypatch):
    """A bound datagram socket standing in for systemd; NOTIFY_SOCKET points at it."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify")
    sock.bind(path)
    sock.settimeout(2)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    yield sock
    sock.close()


def received(sock: socket.socket) -> list[str]:
    return sock.recv(4096).decode().split("\n")


def test_status_ready_watchdog_stopping_arrive_in_order(manager):
    assert sdnotify.status("loading model /models/llama (3/7 shards)")
    assert sdnotify.ready("serving on 0.0.0.0:50051")
    assert sdnotify.watchdog()
    assert sdnotify.stopping()
    assert received(manager) == ["STATUS=loading model /models/llama (3/7 shards)"]
    assert received(manager) == ["READY=1", "STATUS=serving on 0.0.0.0:50051"]
    assert received(manager) == ["WATCHDOG=1"]
    assert received(manager) == ["STOPPING=1"]


def test_status_is_kept_to_one_line(manager):
    sdnotify.status("first\nsecond")
    assert received(manager) == ["STATUS=first second"]


def test_abstract_socket(monkeypatch):
    name = f"llmbench-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        sock.settimeout(2)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert sdnotify.ready()
        assert received(sock) == ["READY=1"]


def test_no_op_outside_systemd(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sdnotify.ready() is False
    assert sdnotify.watchdog() is False
    monkeypatch.setenv("NOTIFY_SOCKET", "vsock:2:1234")
    assert sdnotify.status("x") is False


def test_vanished_socket_does_not_raise(tmp_path, monkeypatch):
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone"))
    assert sdnotify.ready() is False


def test_watchdog_interval(monkeypatch):
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert sdnotify.watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_USEC", "60000000")
    assert sdnotify.watchdog_interval() == 30.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert sdnotify.watchdog_interval() == 30.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert sdnotify.watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_PID", "")
    monkeypatch.setenv("WATCHDOG_USEC", "0")
    assert sdnotify.watchdog_interval() is None


def drain(sock: socket.socket) -> list[bytes]:
    sock.setblocking(False)
    out = []
    while True:
        try:
            out.append(sock.recv(4096))
        except BlockingIOError:
            return out


def test_run_watchdog_pings_only_while_healthy(manager, monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "40000")  # ping every 20 ms
    healthy = [True]
    phases = {}

    async def scenario() -> None:
        task = asyncio.create_task(sdnotify.run_watchdog(lambda: healthy[0]))
        await asyncio.sleep(0.15)
        healthy[0] = False
        await asyncio.sleep(0.01)
        phases["healthy"] = drain(manager)
        await asyncio.sleep(0.15)
        phases["unhealthy"] = drain(manager)
        task.cancel()

    asyncio.run(scenario())
    assert len(phases["healthy"]) >= 3 and set(phases["healthy"]) == {b"WATCHDOG=1"}
    assert phases["unhealthy"] == []


def test_run_watchdog_returns_without_watchdog(manager):
    asyncio.run(asyncio.wait_for(sdnotify.run_watchdog(lambda: True), 1))


def receive_with_pid(sock: socket.socket, timeout: float) -> tuple[list[str], int]:
    sock.settimeout(timeout)
    data, anc, _, _ = sock.recvmsg(4096, socket.CMSG_SPACE(struct.calcsize("3i")))
    pid = next(struct.unpack("3i", d[:12])[0] for level, kind, d in anc
               if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS)
    return data.decode().split("\n"), pid


@pytest.mark.slow
def test_agent_speaks_sd_notify_from_its_main_process(manager):
    manager.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    env = dict(os.environ, NOTIFY_SOCKET=manager.getsockname(), WATCHDOG_USEC="400000")
    cmd = [str(Path(sys.executable).parent / "llmbench"), "agent", "--engine", "simulated", "--port", "0"]
    agent = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL)
    try:
        seen: list[list[str]] = []
        while not any("READY=1" in m for m in seen):
            fields, pid = receive_with_pid(manager, 60)
            assert pid == agent.pid, "NotifyAccess=main: systemd drops messages from other processes"
            seen.append(fields)
        assert any(f.startswith("STATUS=") for m in seen[:-1] for f in m), "no STATUS while loading"
        fields = []
        while fields != ["WATCHDOG=1"]:  # pings start once the agent is ready (timeout: none came)
            fields, _ = receive_with_pid(manager, 5)
        agent.send_signal(signal.SIGTERM)
        while "STOPPING=1" not in fields:
            fields, _ = receive_with_pid(manager, 30)
        assert agent.wait(30) == 0
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
