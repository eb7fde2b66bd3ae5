"""The TUI driven by Textual's pilot from a scripted source: what the widgets show, views, quitting."""
from __future__ import annotations

import asyncio

import pytest

from llmbench.proto import pb
from llmbench.tui.app import CONFIRM_ABORT, RunApp

SIZE = (200, 50)  # wide: every column of the agents view fits


class ScriptedSource:
    """Hands the app what the test delivers; records aborts like a run would."""
    description = "a script"

    def __init__(self, controls_run: bool = True) -> None:
        self.pending: list[pb.RunStatus] = []
        self.controls_run = controls_run
        self.problem = ""
        self.ended = False
        self.aborts = 0
        self.closed = False

    def poll(self) -> list[pb.RunStatus]:
        out, self.pending = self.pending, []
        return out

    def abort(self) -> None:
        self.aborts += 1

    def close(self) -> None:
        self.closed = True


def agent(address: str, done: int, running: int = 3, tokens_per_s: float = 812.0) -> pb.AgentRunStatus:
    status = pb.AgentStatus(agent_id=address, node_name="gpu-node-1", ready=True,
                            model=pb.ModelInfo(name="llama3.1-8b", engine="paged", device="cuda:0", dtype="bfloat16"),
                            kv_block_size=16, kv_blocks_total=1000, kv_blocks_free=400, kv_tokens_available=9600,
                            memory_free_bytes=20 << 30, memory_total_bytes=141 << 30, memory_kind="cuda",
                            running=running, waiting=2, output_tokens_per_s=tokens_per_s)
    return pb.AgentRunStatus(address=address, state="ready", queries_done=done, inflight=running + 2, status=status)


def status(second: int, **overrides) -> pb.RunStatus:
    msg = pb.RunStatus(
        run_id="run-1", scenario="Server", mode="performance", phase="loadgen", output_dir="/results/x",
        elapsed_s=second, expected=600, issued=100 * second + 5, completed=100 * second, tokens_per_s=1000.0 + second,
        samples_per_s=7.0 + second, eta_s=90.0 - second, inflight=5, queued=1,
        ttft=pb.LatencySummary(count=100 * second, p50_s=0.120, p90_s=0.250, p99_s=0.480, max_s=0.9, limit_s=2.0),
        tpot=pb.LatencySummary(count=100 * second, p50_s=0.011, p90_s=0.020, p99_s=0.140, max_s=0.2, limit_s=0.1),
        agents=[agent("10.0.0.1:50051", 60 * second), agent("10.0.0.2:50051", 40 * second, running=1)],
        throughput=[pb.ThroughputPoint(elapsed_s=second, tokens_per_s=1000.0 + second, samples_per_s=7.0)],
        log_seq=second, log_lines=[f"line {second}"])
    for key, value in overrides.items():
        setattr(msg, key, value)
    return msg


def text(app: RunApp, selector: str) -> str:
    return str(app.query_one(selector).render())


def log_lines(app: RunApp) -> list[str]:
    return [strip.text.rstrip() for strip in app.query_one("#log-pane").lines]


def run(coro) -> None:
    asyncio.run(coro)


async def deliver(pilot, app: RunApp, *messages: pb.RunStatus) -> None:
    """Hand messages to the app and wait until it has polled them (and drawn what it polled)."""
    app.source.pending.extend(messages)
    for _ in range(100):
        if not app.source.pending:
            break
        await pilot.pause(0.02)
    assert not app.source.pending, "the app stopped polling"
    await pilot.pause(0.05)


async def ticks(pilot, app: RunApp, n: int = 3) -> None:
    await pilot.pause(app.refresh_s * n)


def test_widgets_show_the_latest_status_and_keep_history():
    async def scenario():
        app = RunApp(ScriptedSource(), refresh_s=0.05)
        async with app.run_test(size=SIZE) as pilot:
            assert text(app, "#header") == "llmbench · waiting for a script"
            await deliver(pilot, app, status(1), status(2))
            await deliver(pilot, app, status(3))
            assert text(app, "#header") == ("llmbench · Server performance · phase loadgen · 0:03 elapsed · "
                                            "results /results/x")
            assert text(app, "#progress-text") == ("300/600 samples · 10.0 samples/s · 1,003 tokens/s · ETA 1:27 · "
                                                   "5 in flight, 1 queued")
            latency = app.query_one("#latency")
            assert latency.get_row("TTFT") == ["TTFT", "300", "120.0", "250.0", "480.0", "900.0", "2000.0", "ok"]
            assert latency.get_row("TPOT") == ["TPOT", "300", "11.0", "20.0", "140.0", "200.0", "100.0", "OVER"]
            full = app.query_one("#agents-full")
            assert full.get_row("10.0.0.1:50051") == ["10.0.0.1:50051", "ready", "gpu-node-1", "cuda:0",
                                                      "llama3.1-8b (paged)", "███░░  60%", "9,600/16,000",
                                                      "████░  86%", "20.0/141.0 GiB cuda", "3/2", "812", "180",
                                                      "5", "0"]
            assert app.query_one("#agents-compact").get_row("10.0.0.2:50051") == [
                "10.0.0.2:50051", "ready", "███░░  60%", "████░  86%", "1/2", "812", "120", "3"]
            assert list(app.query_one("#tokens-spark").data) == [1001.0, 1002.0, 1003.0]
            assert list(app.query_one("#samples-spark").data) == [7.0, 7.0, 7.0]
            assert "output tokens/s: 1,003.0 now, peak 1,003.0" in text(app, "#tokens-label")
            assert not app.query_one("#banner").has_class("shown")
            await pilot.press("3")  # the log pane draws its lines once it is shown
            await pilot.pause(0.05)
            assert log_lines(app) == ["line 1", "line 2", "line 3"]
    run(scenario())


def test_repeated_points_and_lines_are_kept_once_and_a_new_run_starts_afresh():
    async def scenario():
        app = RunApp(ScriptedSource(), refresh_s=0.05)
        async with app.run_test(size=SIZE) as pilot:
            await deliver(pilot, app, status(1), status(2), status(2))  # a reconnected stream repeats itself
            assert list(app.run_view.tokens_per_s) == [1001.0, 1002.0]
            assert list(app.run_view.log) == ["line 1", "line 2"]
            await deliver(pilot, app, status(1, run_id="run-2"))
            assert list(app.run_view.tokens_per_s) == [1001.0]  # only run-2's
            assert list(app.run_view.log) == ["line 1"]
    run(scenario())


def test_tab_and_number_keys_switch_views():
    async def scenario():
        app = RunApp(ScriptedSource(), refresh_s=0.05)
        async with app.run_test(size=SIZE) as pilot:
            await deliver(pilot, app, status(1))
            views = app.query_one("#views")
            seen = [views.active]
            for key in ("tab", "tab", "tab", "shift+tab", "2", "1", "3"):
                await pilot.press(key)
                seen.append(views.active)
            assert seen == ["overview", "agents", "log", "overview", "log", "agents", "overview", "log"]
    run(scenario())


def test_q_asks_before_aborting_the_run_and_leaves_once_it_ended():
    source = ScriptedSource()

    async def scenario():
        app = RunApp(source, refresh_s=0.05, stay=True)
        async with app.run_test(size=SIZE) as pilot:
            await deliver(pilot, app, status(1))
            await pilot.press("q")
            assert text(app, "#banner") == CONFIRM_ABORT and app.query_one("#banner").has_class("shown")
            await pilot.press("n")  # keep running
            await ticks(pilot, app)
            assert source.aborts == 0 and app.is_running and not app.query_one("#banner").has_class("shown")
            await pilot.press("q")
            await pilot.press("y")
            assert source.aborts == 1
            assert text(app, "#banner").startswith("Aborting the run")
            await ticks(pilot, app)
            assert app.is_running  # it waits for the run to end (agent streams closed)
            source.ended = True
            await ticks(pilot, app)
            assert not app.is_running
    run(scenario())
    assert source.closed


def test_a_second_ctrl_c_aborts_and_an_open_question_goes_when_the_run_ends():
    source = ScriptedSource()

    async def scenario():
        app = RunApp(source, refresh_s=0.05, stay=True)
        async with app.run_test(size=SIZE) as pilot:
            await deliver(pilot, app, status(1))
            await pilot.press("ctrl+c")
            assert text(app, "#banner") == CONFIRM_ABORT and source.aborts == 0
            await deliver(pilot, app, status(6, phase="done", finished=True, outcome="VALID (Server)"))
            assert text(app, "#banner").startswith("Run finished: VALID (Server)")
            await pilot.press("y")  # the question went away with the run: nothing to abort
            await ticks(pilot, app)
            assert source.aborts == 0 and app.is_running
            await pilot.press("ctrl+c")
            await pilot.pause(0.1)
            assert not app.is_running
    run(scenario())
    assert source.aborts == 0

    source = ScriptedSource()

    async def twice():
        app = RunApp(source, refresh_s=0.05, stay=True)
        async with app.run_test(size=SIZE) as pilot:
            await deliver(pilot, app, status(1))
            await pilot.press("ctrl+c")
            await pilot.press("ctrl+c")
            assert source.aborts == 1 and text(app, "#banner").startswith("Aborting the run")
    run(twice())


def test_attached_viewer_leaves_at_once_without_touching_the_run():
    source = ScriptedSource(controls_run=False)

    async def scenario():
        app = RunApp(source, refresh_s=0.05, stay=True)
        async with app.run_test(size=SIZE) as pilot:
            await deliver(pilot, app, status(1))
            await pilot.press("q")
            await pilot.pause(0.1)
            assert not app.is_running
    run(scenario())
    assert source.aborts == 0


@pytest.mark.parametrize("phase, outcome, banner", [
    ("done", "VALID (Server): 7.02 samples/s, 898 tokens/s",
     "Run finished: VALID (Server): 7.02 samples/s, 898 tokens/s; report: /results/x/report.md. Press q to leave."),
    ("failed", "agent 10.0.0.1:50051 did not answer within 10 s",
     "Run FAILED: agent 10.0.0.1:50051 did not answer within 10 s. Press q to leave."),
])
def test_the_end_of_the_run_is_shown_and_q_then_leaves_without_asking(phase, outcome, banner):
    source = ScriptedSource()

    async def scenario():
        app = RunApp(source, refresh_s=0.05, stay=True)
        async with app.run_test(size=SIZE) as pilot:
            await deliver(pilot, app, status(1), status(6, phase=phase, finished=True, outcome=outcome))
            assert text(app, "#banner") == banner
            assert "600/600 samples" in text(app, "#progress-text")
            await pilot.press("q")
            await pilot.pause(0.1)
            assert not app.is_running
    run(scenario())
    assert source.aborts == 0


def test_a_connection_problem_is_shown_until_it_clears():
    source = ScriptedSource(controls_run=False)

    async def scenario():
        app = RunApp(source, refresh_s=0.05, stay=True)
        async with app.run_test(size=SIZE) as pilot:
            await deliver(pilot, app, status(1))
            source.problem = "connection to 10.0.0.9:50060 lost (UNAVAILABLE: Socket closed); retrying every 2 s"
            await ticks(pilot, app)
            assert text(app, "#banner") == f"{source.problem}. q: leave"
            source.problem = ""
            await ticks(pilot, app)
            assert not app.query_one("#banner").has_class("shown")
    run(scenario())


@pytest.mark.parametrize("phase, outcome, how", [
    ("done", "VALID (Server): 7.02 samples/s", "Run finished"),
    ("failed", "the run could not go on: agent-1 exited: killed by SIGKILL", "Run FAILED"),  # abandoned
])
def test_without_stay_the_app_shows_the_end_and_leaves_on_its_own(phase, outcome, how):
    source = ScriptedSource()
    seen = []

    async def scenario():
        app = RunApp(source, refresh_s=0.05, leave_after_s=0.3)
        async with app.run_test(size=(80, 24)) as pilot:
            await deliver(pilot, app, status(1), status(6, phase=phase, finished=True, outcome=outcome))
            seen.append(text(app, "#banner"))
            for _ in range(100):
                if not app.is_running:
                    break
                await pilot.pause(0.05)
            assert not app.is_running
    run(scenario())
    assert seen[0].startswith(f"{how}: {outcome}") and seen[0].endswith(". Leaving...")
    assert source.aborts == 0 and source.closed
