"""The TUI in front of real runs: simulated agents on loopback, real gRPC, real LoadGen.

In process (Textual's pilot, the benchmark on its worker thread) and as `llmbench run` on a pseudo
terminal: the TUI shows itself on a TTY, q + y aborts the run cleanly, the TUI leaves at the end (with
--stay: on q) and the summary follows.
"""
from __future__ import annotations

import asyncio
import fcntl
import os
import pty
import re
import signal
import select
import socket
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from llmbench.coordinator.commands import run_local
from llmbench.coordinator.observe.metrics import RunMetrics
from llmbench.coordinator.run.session import CoordinatorConfig
from llmbench.tui.app import LEAVE_AFTER_S, RunApp
from llmbench.tui.live import BenchmarkThread
from llmbench.tui.source import LocalSource

CLI = [sys.executable, "-c", "import sys; from llmbench.cli import main; sys.exit(main())"]
ANSI = re.compile(rb"\x1b\[[0-9;?<>=]*[a-zA-Z~]|\x1b[()][0-9A-B]|\x1b[=>]")


@pytest.mark.slow
def test_pilot_follows_a_real_run_to_its_end(sim_agents, tmp_path):
    metrics = RunMetrics()
    cfg = CoordinatorConfig(agents=",".join(a.address for a in sim_agents), output=tmp_path / "out",
                            scenario="Server", max_samples=40, target_qps=60, duration_s=2, progress_s=0)
    runner = BenchmarkThread(cfg, metrics)
    app = RunApp(LocalSource(metrics, runner), refresh_s=0.1, stay=True)
    seen_running = []

    async def scenario():
        runner.start()  # as run_live does: the run first, then the app in front of it
        async with app.run_test(size=(200, 50)) as pilot:
            deadline = time.monotonic() + 60
            while not app.query_one("#banner").has_class("shown") and time.monotonic() < deadline:
                await pilot.pause(0.1)
                s = app.run_view.status
                if s is not None and s.phase == "loadgen" and 0 < s.completed < s.expected:
                    seen_running.append(str(app.query_one("#progress-text").render()))
            banner = str(app.query_one("#banner").render())
            assert banner.startswith("Run finished: "), banner
            s = app.run_view.status
            assert s.completed == s.expected == metrics.expected >= 100 and s.failed == 0
            assert str(app.query_one("#progress-text").render()).startswith(f"{s.expected}/{s.expected} samples")
            rows = app.query_one("#agents-full")
            assert sorted(str(k.value) for k in rows.rows) == sorted(a.address for a in sim_agents)
            done = [int(rows.get_row(a.address)[rows.columns_shown.index("done")].replace(",", "")) for a in sim_agents]
            assert sum(done) == s.expected and min(done) > 0
            assert app.query_one("#latency").get_row("TTFT")[1] == str(s.expected)
            assert app.query_one("#latency").get_row("TTFT")[6] == "2000.0"  # Server's limit
            assert len(app.run_view.tokens_per_s) >= 1
            assert any("LoadGen settings" in line for line in app.run_view.log)
            await pilot.press("q")  # the run is over: no question
            await pilot.pause(0.2)
            assert not app.is_running
    asyncio.run(scenario())
    runner.join(10)
    assert runner.result is not None and runner.error is None and runner.result.snapshot.completed == metrics.expected
    assert seen_running and "samples/s" in seen_running[-1] and "ETA" in seen_running[-1]
    assert (tmp_path / "out" / "report.md").is_file()


class Terminal:
    """A command on a pseudo terminal; `screen` is everything it wrote, escape codes removed."""

    def __init__(self, cmd: list[str], cwd: Path) -> None:
        self.master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 45, 140, 0, 0))
        self.proc = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, cwd=cwd,
                                     env=dict(os.environ, TERM="xterm-256color"), start_new_session=True)
        os.close(slave)
        self.raw = b""

    @property
    def screen(self) -> str:
        return ANSI.sub(b"", self.raw).decode(errors="replace")

    def read_until(self, text: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while text not in self.screen and time.monotonic() < deadline:
            if select.select([self.master], [], [], 0.1)[0]:
                try:
                    self.raw += os.read(self.master, 1 << 16)
                except OSError:  # the command exited and closed its side
                    return text in self.screen
        return text in self.screen

    def type(self, keys: str) -> None:
        os.write(self.master, keys.encode())

    def wait(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            self.read_until("\0", 0.2)  # keep draining, or the command blocks on a full terminal
        return self.proc.wait(1)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        os.close(self.master)


def agent_addresses(out: Path) -> list[str]:
    return [run_local.LISTENING.search((out / f"agent-{i}.log").read_text()).group(1) for i in range(2)]


def port_closed(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    with socket.socket() as s:
        return s.connect_ex((host, int(port))) != 0


@pytest.mark.slow
@pytest.mark.parametrize("how, status, said", [
    ("q y", 130, r"llmbench: aborted from the TUI after \d+ of \d+ samples; agent streams closed, no report written"),
    ("SIGTERM", 143, r"llmbench run: interrupted by SIGTERM"),  # systemctl stop, a deleted Job
])
def test_llmbench_run_on_a_terminal_shows_the_tui_and_stops_cleanly(tmp_path, how, status, said):
    out = tmp_path / "out"
    term = Terminal([*CLI, "run", "--engine", "simulated", "--tokens-per-s", "3000", "--scenario", "Server",
                     "--target-qps", "20", "--duration", "60", "--max-samples", "40", "--output", str(out)], tmp_path)
    try:
        assert term.read_until("1 Overview", 30), term.screen[-2000:]
        assert term.read_until("p99 limit ms", 10) and term.read_until(" samples/s · ", 10)
        time.sleep(1.0)
        if how == "SIGTERM":
            term.proc.send_signal(signal.SIGTERM)
        else:
            term.type("q")
            assert term.read_until("Abort the run?", 5)
            term.type("y")
        assert term.wait(30) == status
        assert re.search(said, term.screen), term.screen[-2000:]
    finally:
        term.close()
    assert all(port_closed(a) for a in agent_addresses(out))  # agents stopped
    assert not (out / "report.md").exists()


@pytest.mark.slow
@pytest.mark.parametrize("stay", [False, True])
def test_llmbench_run_on_a_terminal_leaves_the_tui_at_the_end_then_prints_the_summary(tmp_path, stay):
    out = tmp_path / "out"
    term = Terminal([*CLI, "run", "--engine", "simulated", "--tokens-per-s", "20000", "--scenario", "Offline",
                     "--duration", "1", "--max-samples", "40", "--output", str(out)] + ["--stay"] * stay, tmp_path)
    try:
        assert term.read_until("Run finished: ", 40), term.screen[-2000:]
        if stay:
            assert term.read_until("Press q to leave", 5)
            time.sleep(3 * LEAVE_AFTER_S)
            assert term.proc.poll() is None  # the finished run stays on screen until q
            term.type("q")
        else:
            assert term.read_until("Leaving...", 5)  # and it goes without a key
        valid = "Result is : VALID" in (out / "mlperf_log_summary.txt").read_text()
        assert term.wait(30) == (0 if valid else 1)  # INVALID (exit 1) when the run ends within its 1 s min_duration
        assert term.read_until("Result is : ", 1) and f"Report: {(out / 'report.md').resolve()}" in term.screen
    finally:
        term.close()
    text = (out / "report.md").read_text()
    assert "| start the local agent processes |" in text and "| the LoadGen test |" in text
