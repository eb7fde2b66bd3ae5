"""What an interrupted run says (stderr line, report.md) in each phase it can stop in: only what is true.

Unit level: a RunMetrics in the phase, a folder with or without LoadGen's logs (in UNFINISHED, where a
run writes its files until they are all whole), and the two calls a front makes on Ctrl-C
(write_interrupted while the phase is live, exits.interrupted after the run is marked aborted). One
real subprocess stopped while it waits for agents.
"""
import signal
import subprocess
import sys
import time

import pytest

from llmbench.cli.main import main as llmbench
from llmbench.coordinator.run import exits
from llmbench.coordinator.observe.metrics import RunMetrics
from llmbench.coordinator.run.outputs import REPORT_FILE, UNFINISHED
from llmbench.coordinator.report.markdown import write_interrupted
from llmbench.coordinator.run.session import CoordinatorConfig

SUMMARY = "================================================\nMLPerf Results Summary\n" \
          "================================================\nScenario : Server\nMode     : PerformanceOnly\n" \
          "Completed samples per second    : 9.87\nResult is : VALID\n"
EARLIER_REPORT = "# llmbench report: Server performance\n\nan earlier run's report\n"
# The wall-clock time each phase records as it ends (session.py): what a run in `phase` has recorded.
RECORDED = {"starting": [], "agents": [], "dataset": ["agents ready"], "loadgen": ["agents ready", "dataset"],
            "accuracy": ["agents ready", "dataset", "loadgen"]}
CLI = [sys.executable, "-c", "import sys; from llmbench.cli import main; sys.exit(main())"]


def metrics_in(phase, completed=0, expected=0, mode="performance"):
    metrics = RunMetrics(expected=expected, completed=completed, phase=phase, mode=mode)
    metrics.output_dir = "" if phase == "starting" else "out"  # as run_benchmark sets it when it begins
    metrics.timings_s.update({name: 1.0 for name in RECORDED.get(phase, RECORDED["accuracy"])})
    metrics.output_tokens = completed * 128
    return metrics


def stop(tmp_path, metrics, exc=None, command="coordinator", mode="performance"):
    """What the coordinator does on Ctrl-C (cli.run_front, then cli.run): (status, report.md's name or None)."""
    exc = exc or KeyboardInterrupt()
    out = tmp_path / "out"
    cfg = CoordinatorConfig(agents="127.0.0.1:1", output=out, mode=mode)
    written = write_interrupted(cfg, metrics, exits.how(exc)) if out.is_dir() else None
    metrics.finish("aborted", "interrupted")
    return exits.interrupted(exc, out, metrics, command), written and written.name


def err_line(capsys):
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def folder(tmp_path, *names, text="x", under=""):
    """The output folder, with `names` in it, or in its `under` (UNFINISHED: the stopped run's own)."""
    out = tmp_path / "out"
    (out / under).mkdir(parents=True, exist_ok=True)
    for name in names:
        (out / under / name).write_text(text)
    return out


@pytest.mark.parametrize("phase", ["starting", "agents", "dataset"])
def test_before_loadgen_no_report_and_an_earlier_run_left_alone(tmp_path, capsys, phase):
    out = folder(tmp_path, "mlperf_log_detail.txt")
    (out / "mlperf_log_summary.txt").write_text(SUMMARY)
    (out / REPORT_FILE).write_text(EARLIER_REPORT)
    status, written = stop(tmp_path, metrics_in(phase))
    assert status == 130 and written is None
    assert (out / REPORT_FILE).read_text() == EARLIER_REPORT  # not overwritten with "interrupted"
    line = err_line(capsys)
    assert line == (f"llmbench coordinator: interrupted before the LoadGen test (phase {phase}); nothing written: "
                    f"an earlier run's files in {out.resolve()} are left as they were")


def test_before_loadgen_local_run_names_its_agent_logs(tmp_path, capsys):
    out = folder(tmp_path, "agent-1.log", "agent-2.log", "notes.txt")
    status, written = stop(tmp_path, metrics_in("starting"), exc=exits.Terminated(), command="run")
    assert status == 143 and written is None and not (out / REPORT_FILE).exists()
    assert err_line(capsys) == ("llmbench run: interrupted by SIGTERM before the LoadGen test (phase starting); "
                                f"no LoadGen logs; agent-1.log and agent-2.log in {out.resolve()}")


def test_coordinator_does_not_claim_agent_logs_or_a_missing_folder(tmp_path, capsys):
    assert stop(tmp_path, metrics_in("agents"))[0] == 130
    assert err_line(capsys) == "llmbench coordinator: interrupted before the LoadGen test (phase agents); nothing written"
    folder(tmp_path, "agent-1.log")  # an earlier `llmbench run`'s: the coordinator writes none
    stop(tmp_path, metrics_in("agents"))
    assert err_line(capsys).endswith(f"(phase agents); nothing written in {(tmp_path / 'out').resolve()}")


def test_during_loadgen_partial_logs_and_report(tmp_path, capsys):
    out = folder(tmp_path, "mlperf_log_detail.txt", "mlperf_log_summary.txt", "mlperf_log_accuracy.json", under=UNFINISHED)
    status, written = stop(tmp_path, metrics_in("loadgen", completed=1500, expected=3000))
    assert status == 130 and written == REPORT_FILE
    assert err_line(capsys) == (f"llmbench coordinator: interrupted after 1,500 of 3,000 samples; "
                                f"LoadGen's partial logs and report.md in {out.resolve()}")
    assert not (out / UNFINISHED).exists()  # no earlier run's files to lose: the run's own are in the folder
    report = (out / REPORT_FILE).read_text()
    assert report.splitlines()[0] == "# llmbench report: llama3.1-8b Server performance, interrupted"
    assert "during the LoadGen test, after 1,500 of 3,000 samples answered; no LoadGen result" in report
    assert "LoadGen's logs in this folder are partial: the test did not finish" in report
    assert "| samples answered | 1,500 |" in report and "| output tokens | 192,000 |" in report


def test_beside_an_earlier_run_the_partial_files_stay_apart(tmp_path, capsys):
    """A run that did not finish must not replace a complete one: its files stay in UNFINISHED."""
    out = folder(tmp_path, "mlperf_log_detail.txt", "mlperf_log_accuracy.json", under=UNFINISHED)
    (out / "mlperf_log_summary.txt").write_text(SUMMARY)
    (out / REPORT_FILE).write_text(EARLIER_REPORT)
    (out / "agent-0.log").write_text("this run's agent")
    status, written = stop(tmp_path, metrics_in("loadgen", completed=12, expected=40), command="run")
    assert status == 130 and written == REPORT_FILE
    assert (out / REPORT_FILE).read_text() == EARLIER_REPORT and (out / "mlperf_log_summary.txt").read_text() == SUMMARY
    assert "no LoadGen result" in (out / UNFINISHED / REPORT_FILE).read_text()
    assert err_line(capsys) == (f"llmbench run: interrupted after 12 of 40 samples; LoadGen's partial logs and report.md "
                                f"in {(out / UNFINISHED).resolve()}; agent-0.log in {out.resolve()}; an earlier run's "
                                f"files in {out.resolve()} are left as they were")


def test_at_the_start_of_loadgen_no_logs_yet(tmp_path, capsys):
    out = folder(tmp_path, "audit.config", under=UNFINISHED)  # ours (TEST06), not a LoadGen log
    status, written = stop(tmp_path, metrics_in("loadgen", expected=40))
    report = (out / REPORT_FILE).read_text()
    assert "LoadGen had written no logs yet." in report and "partial" not in report
    assert err_line(capsys) == (f"llmbench coordinator: interrupted after 0 of 40 samples; no LoadGen logs; "
                                f"report.md in {out.resolve()}")


@pytest.mark.parametrize("mode, doing, result", [("accuracy", "scoring accuracy", "none (accuracy mode)"),
                                                 ("performance", "checking its results", "VALID")])
def test_after_loadgen_logs_are_complete(tmp_path, capsys, mode, doing, result):
    out = folder(tmp_path, "mlperf_log_detail.txt", "mlperf_log_accuracy.json", under=UNFINISHED)
    (out / UNFINISHED / "mlperf_log_summary.txt").write_text(
        SUMMARY if result == "VALID" else SUMMARY.replace("Result is : VALID\n", ""))
    status, written = stop(tmp_path, metrics_in("accuracy", completed=3000, expected=3000, mode=mode), mode=mode)
    report = (out / REPORT_FILE).read_text()
    assert f"interrupted after the LoadGen test, while {doing}" in report
    assert "LoadGen's test finished (its logs are complete)" in report and f"LoadGen's result: **{result}**" in report
    assert "partial" not in report and "no LoadGen result" not in report and "did not finish" not in report
    assert err_line(capsys) == (f"llmbench coordinator: interrupted after the LoadGen test (3,000 samples answered), "
                                f"while {doing}; LoadGen's complete logs and report.md in {out.resolve()}")


@pytest.mark.parametrize("phase", ["starting", "agents", "dataset", "loadgen", "accuracy", "report"])
def test_phase_reached_is_kept_when_the_run_is_marked_over(phase):
    metrics = metrics_in(phase)
    assert exits.phase_reached(metrics) == phase  # live: as the session set it
    metrics.finish("aborted", "aborted from the TUI")
    assert metrics.phase == "aborted" and exits.phase_reached(metrics) == phase


def test_help_says_what_an_interrupted_run_leaves(capsys):
    with pytest.raises(SystemExit):
        llmbench(["coordinator", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "Ctrl-C and SIGTERM leave what was written so far: LoadGen's logs (partial if its test had not finished)" in text
    assert "partial logs and a short report.md" not in text


def test_ctrl_c_while_waiting_for_agents_writes_nothing(tmp_path):
    """A real coordinator waiting for an agent that never comes: SIGINT ends it with 130 and an empty folder."""
    out = tmp_path / "out"
    proc = subprocess.Popen([*CLI, "coordinator", "--agents", "127.0.0.1:1", "--connect-timeout", "60", "--output", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = proc.stdout.readline()  # a preflight note, printed as the session starts
    assert first, proc.stderr.read()
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(30) == 130
    err = proc.stderr.read()
    assert "llmbench coordinator: interrupted before the LoadGen test (phase " in err, err
    assert f"nothing written in {out.resolve()}" in err and "partial" not in err, err
    assert list(out.iterdir()) == []
