"""The llmbench command line as tests drive it: a subprocess, an in-process call that must fail with one
error line, and `llmbench agent` as a process whose listening address is parsed."""
from __future__ import annotations

import queue
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from llmbench.cli import main

LLMBENCH = [sys.executable, "-c", "import sys; from llmbench.cli import main; sys.exit(main())"]
LISTENING = re.compile(r"llmbench-agent: listening on (127\.0\.0\.1):(\d+)")


def llmbench(*args: object, stdin: str = "", timeout: float = 120, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*LLMBENCH, *map(str, args)], input=stdin, capture_output=True, text=True, timeout=timeout,
                          cwd=cwd)


def error_of(capsys, *argv: object) -> str:
    """The one error line of an in-process `llmbench ...` that must fail with status 2."""
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "error: " in line]
    assert code == 2 and len(lines) == 1, err
    return lines[0].split("error: ", 1)[1]



class AgentProcess:
    """`llmbench agent --port 0 ...` in a subprocess; address parsed from its listening line."""

    def __init__(self, *args: str, port: int = 0):
        self.log = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen([*LLMBENCH, "agent", "--port", str(port), "--grace", "2", *args],
                                     stdout=subprocess.PIPE, stderr=self.log, text=True)
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: lines.put(self.proc.stdout.readline()), daemon=True).start()
        try:
            self.first_line = lines.get(timeout=60)
        except queue.Empty:
            self.kill()
            raise AssertionError("the agent printed no listening line within 60 s")
        m = LISTENING.fullmatch(self.first_line.rstrip("\n"))
        assert m, f"unexpected first line {self.first_line!r}; stderr: {self.stderr()}"
        self.address = f"{m[1]}:{m[2]}"

    def wait_serving(self, timeout: float = 120) -> None:
        with grpc.insecure_channel(self.address) as ch:
            health = health_pb2_grpc.HealthStub(ch)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                status = health.Check(health_pb2.HealthCheckRequest(service="llmbench.v1.Agent"), timeout=5).status
                if status == health_pb2.HealthCheckResponse.SERVING:
                    return
                assert self.proc.poll() is None, self.stderr()
                time.sleep(0.1)
        raise AssertionError(f"agent not SERVING after {timeout} s: {self.stderr()}")

    def terminate(self, timeout: float = 20) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stderr(self) -> str:
        self.log.seek(0)
        return self.log.read()
