"""Attach mode: a real coordinator status server (Coordinator.WatchRun) and `llmbench tui --connect`."""
from __future__ import annotations

import argparse
import asyncio
import re
import socket
import subprocess
import sys
import time

import pytest

from llmbench.coordinator.observe.metrics import RunMetrics
from llmbench.coordinator.run.session import CoordinatorConfig
from llmbench.coordinator.observe.status_service import StatusServer
from llmbench.proto import pb
from llmbench.tui import cli as tui_cli
from llmbench.tui.app import RunApp
from llmbench.tui.live import BenchmarkThread
from llmbench.tui.source import RemoteSource

CLI = [sys.executable, "-c", "import sys; from llmbench.cli import main; sys.exit(main())"]


def banner(app: RunApp) -> str:
    return str(app.query_one("#banner").render())


async def wait_for(pilot, check, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await pilot.pause(0.05)


@pytest.mark.slow
def test_attached_tui_follows_a_real_run_to_its_end(sim_agents, tmp_path):
    metrics = RunMetrics()
    server = StatusServer(metrics, "127.0.0.1", 0)
    port = server.start()
    cfg = CoordinatorConfig(agents=",".join(a.address for a in sim_agents), output=tmp_path / "out",
                            scenario="Server", max_samples=40, target_qps=60, duration_s=2, progress_s=0)
    runner = BenchmarkThread(cfg, metrics)
    source = RemoteSource(f"127.0.0.1:{port}", interval_ms=200).start()
    app = RunApp(source, refresh_s=0.1, stay=True)
    mid_run = []

    async def scenario():
        runner.start()
        async with app.run_test(size=(200, 50)) as pilot:
            def over() -> bool:
                s = app.run_view.status
                if s is not None and 0 < s.completed < s.expected:
                    mid_run.append(s.completed)
                return s is not None and s.finished
            await wait_for(pilot, over, 60)
            await pilot.pause(0.2)
            s = app.run_view.status
            assert s.phase == "done" and banner(app).startswith(f"Run finished: {metrics.outcome}")
            assert s.completed == s.expected == metrics.expected and s.output_dir == str(tmp_path / "out")
            table = app.query_one("#agents-full")
            assert sorted(str(k.value) for k in table.rows) == sorted(a.address for a in sim_agents)
            assert table.get_row(sim_agents[0].address)[table.columns_shown.index("model")] == "simulated (simulated)"
            assert app.query_one("#latency").get_row("TTFT")[1] == str(s.expected)
            assert list(app.run_view.tokens_per_s) == [p.tokens_per_s for p in metrics.throughput()]
            assert any(line.startswith("report: ") for line in app.run_view.log)
            assert source.ended and source.problem == ""
            await pilot.press("q")  # an attached viewer just leaves
            await pilot.pause(0.2)
            assert not app.is_running
    try:
        asyncio.run(scenario())
        # A watcher that comes late gets the whole story in its first message.
        late = RemoteSource(f"127.0.0.1:{port}").start()
        deadline = time.monotonic() + 10
        while not late.ended and time.monotonic() < deadline:
            time.sleep(0.05)
        (first,) = late.poll()
        assert first.finished and len(first.throughput) == len(metrics.throughput()) > 0
        assert first.log_seq == 1 and len(first.log_lines) == len(metrics.log_since(0)[1])
    finally:
        runner.join(10)
        server.stop()
    assert mid_run, "never saw the run in progress"
    assert runner.error is None and (tmp_path / "out" / "report.md").is_file()


def test_dropped_connection_is_shown_and_the_viewer_reconnects():
    metrics = RunMetrics(scenario="Offline", mode="performance", expected=100)
    server = StatusServer(metrics, "127.0.0.1", 0)
    port = server.start()
    source = RemoteSource(f"127.0.0.1:{port}", interval_ms=100, retry_s=0.2).start()
    app = RunApp(source, refresh_s=0.05, stay=True)

    async def scenario():
        async with app.run_test(size=(140, 45)) as pilot:
            await wait_for(pilot, lambda: app.run_view.status is not None)
            server.stop(grace_s=0)  # the coordinator goes away mid-run
            await wait_for(pilot, lambda: "before the run was over" in banner(app) or "lost" in banner(app))
            assert f"127.0.0.1:{port}" in banner(app) and "retrying every 0.2 s" in banner(app)
            metrics.completed = 42
            again = StatusServer(metrics, "127.0.0.1", port)
            again.start()
            try:
                await wait_for(pilot, lambda: app.run_view.status.completed == 42)
                await pilot.pause(0.2)
                assert banner(app) == ""
                metrics.finish("done", "VALID (Offline): 12 samples/s, 1536 tokens/s")
                await wait_for(pilot, lambda: banner(app).startswith("Run finished: VALID (Offline)"))
            finally:
                again.stop()
    asyncio.run(scenario())


def test_unreachable_coordinator_is_named_in_the_banner():
    with socket.socket() as held:  # bound, never listening: refused, and no other test can take the port
        held.bind(("127.0.0.1", 0))
        port = held.getsockname()[1]
        source = RemoteSource(f"127.0.0.1:{port}", retry_s=0.2).start()
        app = RunApp(source, refresh_s=0.05)

        async def scenario():
            async with app.run_test(size=(140, 45)) as pilot:
                await wait_for(pilot, lambda: "cannot reach" in banner(app), 10)
                assert banner(app).startswith(f"cannot reach the coordinator at 127.0.0.1:{port} (UNAVAILABLE")
                assert banner(app).endswith("retrying every 0.2 s. q: leave")
        asyncio.run(scenario())


@pytest.mark.slow
def test_tui_connect_without_a_terminal_prints_progress_until_the_run_ends(tmp_path):
    coordinator = subprocess.Popen(
        [*CLI, "run", "--engine", "simulated", "--tokens-per-s", "4000", "--scenario", "Server", "--target-qps", "40",
         "--duration", "3", "--max-samples", "40", "--output", str(tmp_path / "out"), "--status-port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    m = None
    try:
        for line in coordinator.stdout:  # watch once the status server is up, on the port it picked
            if m := re.match(r"run status on (\S+):", line):
                break
        assert m, "the coordinator never said where its run status is served"
        watcher = subprocess.run([*CLI, "tui", "--connect", m[1], "--interval", "0.2"],
                                 capture_output=True, text=True, timeout=60)
        out = watcher.stdout
        assert watcher.returncode == 0, out + watcher.stderr
        assert "LoadGen settings: benchmark llama3.1-8b, model llama3_1-8b, scenario Server" in out  # the run's log lines
        assert "samples/s" in out and "ETA" in out  # progress lines
        assert "llmbench tui: the run is over (done): " in out and "report: " in out
        rest, _ = coordinator.communicate(timeout=60)
        assert coordinator.returncode == 1, rest  # INVALID: 120 queries are too few for LoadGen's early stopping
    finally:
        if coordinator.poll() is None:
            coordinator.kill()
        coordinator.wait()


def test_tui_connect_bad_address_is_one_clear_line():
    r = subprocess.run([*CLI, "tui", "--connect", "nonsense"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip() == "llmbench tui: error: --connect 'nonsense': expected HOST:PORT, e.g. 127.0.0.1:50060"


@pytest.mark.parametrize("address", ["host:", "host:99999", ":50060", "[::1]50060"])
def test_tui_connect_refuses_addresses_without_host_and_port(address):
    args = argparse.Namespace(connect=address, interval=0.5, no_tui=True)
    with pytest.raises(ValueError, match="expected HOST:PORT"):
        tui_cli.run(args)


def test_status_port_in_use_is_one_clear_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        with pytest.raises(OSError, match=f"cannot serve the run status on 127.0.0.1:{s.getsockname()[1]}"):
            StatusServer(RunMetrics(), "127.0.0.1", s.getsockname()[1]).start()


def test_watchrun_streams_at_the_asked_interval_and_ends_with_the_run():
    metrics = RunMetrics(scenario="Server", mode="performance")
    server = StatusServer(metrics, "127.0.0.1", 0)
    port = server.start()
    source = RemoteSource(f"127.0.0.1:{port}", interval_ms=100).start()
    messages: list[pb.RunStatus] = []
    try:
        deadline = time.monotonic() + 30
        while len(messages) < 10:  # counted, not timed: a busy machine may be slow to connect
            assert time.monotonic() < deadline, f"{len(messages)} messages in 30 s"
            messages += source.poll()
            time.sleep(0.02)
        metrics.finish("failed", "no agent ready for 60 s")
        while not source.ended and time.monotonic() < deadline:
            time.sleep(0.02)
        messages += source.poll()
    finally:
        source.close()
        server.stop()
    gaps = sorted(b.timestamp - a.timestamp for a, b in zip(messages, messages[1:]))
    assert gaps[0] >= 0.09, gaps  # never faster than asked
    assert gaps[len(gaps) // 2] < 0.25, gaps  # and about one per 100 ms (a busy machine only adds a little)
    assert [m.finished for m in messages].count(True) == 1 and messages[-1].finished
    assert messages[-1].phase == "failed" and messages[-1].outcome == "no agent ready for 60 s"


def test_connect_ends_at_once_where_retrying_cannot_help(sim_agents, tmp_path, monkeypatch):
    """An agent's port (UNIMPLEMENTED) and a missing or wrong token (UNAUTHENTICATED) used to be retried
    forever; the coordinator exits 2 on the same answers, and so does `tui --connect` now."""
    from llmbench.common.auth import ServerSecurity
    server = StatusServer(RunMetrics(), "127.0.0.1", 0, ServerSecurity(token="right-token"))
    port = server.start()
    monkeypatch.delenv("LLMBENCH_AUTH_TOKEN", raising=False)
    wrong = tmp_path / "token"
    wrong.write_text("wrong-token\n")
    try:
        for flags, message in (
                ([sim_agents[0].address], "UNIMPLEMENTED"), ([f"127.0.0.1:{port}"], "UNAUTHENTICATED"),
                ([f"127.0.0.1:{port}", "--auth-token-file", str(wrong)], "UNAUTHENTICATED")):
            t = time.monotonic()
            done = subprocess.run([*CLI, "tui", "--no-tui", "--connect", *flags], capture_output=True, text=True,
                                  timeout=60)
            lines = done.stderr.strip().splitlines()
            assert done.returncode == 2 and len(lines) == 1, (flags, done.stdout, done.stderr)
            assert lines[0].startswith(f"llmbench tui: error: {flags[0]} refused the watch ({message}") and \
                ("--status-port" in lines[0] if message == "UNIMPLEMENTED" else "--auth-token-file" in lines[0])
            assert "retrying" not in done.stdout and time.monotonic() - t < 30
    finally:
        server.stop(0.5)
