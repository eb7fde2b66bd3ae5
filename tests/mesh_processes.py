"""Mesh processes for the reliability, security and fuzz tests: simulated `llmbench agent` processes,
a `llmbench coordinator` process whose output lines are timed, a held port, and the check that an
accuracy log answers every sample once with what an uninterrupted run gives."""
from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import grpc
import numpy as np

from llmbench.agent.engine.in_process import generate
from llmbench.agent.engine.simulated import SimulatedEngine
from llmbench.agent.engine.types import EngineConfig, Request
from llmbench.coordinator.data import loaders
from llmbench.proto import pb, rpc

CLI = [sys.executable, "-c", "import sys; from llmbench.cli import main; sys.exit(main())"]
LISTENING = re.compile(r"llmbench-agent: listening on (\S+)")
SIM_VOCAB = 128256


@contextlib.contextmanager
def reserved_port() -> Iterator[int]:
    """A port no other test or connection can take while held: bound with SO_REUSEADDR but not listening,
    so connecting to it is refused and an agent (gRPC sets SO_REUSEADDR too) can still listen on it."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


class Agent:
    """`llmbench agent --engine simulated` as a process on a given port (0: any)."""

    def __init__(self, folder: Path, port: int = 0, tokens_per_s: float = 2000, args: tuple[str, ...] = ()) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.log_path = folder / f"agent-{port or 'any'}-{time.monotonic_ns()}.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([*CLI, "agent", "--host", "127.0.0.1", "--port", str(port), "--grace", "1",
                                          "--engine", "simulated", "--tokens-per-s", str(tokens_per_s), *args],
                                         stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while not (m := LISTENING.search(self.log_path.read_text(errors="replace"))):
            assert self.proc.poll() is None and time.monotonic() < deadline, self.log_path.read_text()
            time.sleep(0.02)
        self.address = m[1]

    def status(self) -> pb.AgentStatus:
        with grpc.insecure_channel(self.address) as channel:
            return next(rpc.AgentStub(channel).WatchStatus(pb.StatusRequest(), timeout=5))

    def signal(self, sig: int) -> float:
        self.proc.send_signal(sig)
        return time.monotonic()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Coordinator:
    """`llmbench coordinator` (or `command`: `run`) as a process; every output line is kept with the time
    it arrived."""

    def __init__(self, *args: str, command: str = "coordinator") -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen([*CLI, command, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, env=env)
        self.lines: list[tuple[float, str]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append((time.monotonic(), line))

    def wait_for(self, pattern: str, timeout: float = 60) -> float:
        """Time the first line matching pattern arrived."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for t, line in list(self.lines):
                if re.search(pattern, line):
                    return t
            assert self.proc.poll() is None or self._reader.is_alive(), self.text
            time.sleep(0.02)
        raise AssertionError(f"no line matching {pattern!r} within {timeout} s:\n{self.text}")

    def finish(self, timeout: float = 120) -> int:
        code = self.proc.wait(timeout)
        self._reader.join(5)
        return code

    @property
    def text(self) -> str:
        return "".join(line for _, line in self.lines)


def expected_outputs(n: int) -> dict[int, list[int]]:
    """What an uninterrupted run gives for the first n synthetic samples."""
    ds = loaders.load("synthetic", max_samples=n, vocab_size=SIM_VOCAB)
    engine = SimulatedEngine(EngineConfig(engine="simulated", tokens_per_s=1e7))
    engine.start()
    try:
        done = generate(engine, [Request(i, p.tolist(), ds.max_new_tokens, ds.min_new_tokens)
                                 for i, p in enumerate(ds.prompts)], timeout=60)
    finally:
        engine.stop()
    return {i: g.tokens for i, g in done.items()}


def check_accuracy_log(out: Path, n: int, first_tokens: bool) -> None:
    """Each qsl index once, whole outputs equal to an uninterrupted run's, first token = start of data."""
    entries = json.loads((out / "mlperf_log_accuracy.json").read_text())
    indices = sorted(e["qsl_idx"] for e in entries)
    assert indices == list(range(n)), f"samples not answered exactly once: {indices}"
    expected = expected_outputs(n)
    for e in entries:
        data = np.frombuffer(bytes.fromhex(e["data"]), dtype="<i4").tolist()
        assert e["token_count"] == len(data) == 128
        assert data == expected[e["qsl_idx"]], f"sample {e['qsl_idx']}: output differs from an uninterrupted run"
        if first_tokens:
            assert np.frombuffer(bytes.fromhex(e["token_data"]), dtype="<i4").tolist() == data[:1]
    assert "No errors encountered during test" in (out / "mlperf_log_summary.txt").read_text()
