"""`llmbench run` / `coordinator` input checks, exit statuses, output folders and interruptions.

Real CLI processes, real simulated agents on loopback, real LoadGen: bad input fails before any agent
is started or contacted, a finished run's status says whether it met its bar, a reused output folder
holds one run's files, and Ctrl-C/SIGTERM leave a report and name the folder.
"""
from __future__ import annotations

import argparse
import json
import re
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from llmbench.cli import main
from llmbench.coordinator.commands import coordinator
from llmbench.coordinator.data import loaders
from llmbench.coordinator.run import outputs, preflight
from llmbench.coordinator.loadgen import early_stopping, settings
from llmbench.coordinator.run.session import CoordinatorConfig
from llmbench.coordinator.run.staging import Staging
from cli_processes import LLMBENCH, error_of, llmbench
from tokenizers_offline import llama3_tokenizer_file

RECORD = {"tok_input": [128000, 5, 6, 7], "output": "The summary."}


def addresses(agents) -> str:
    return ",".join(a.address for a in agents)


@pytest.fixture
def silent_port():
    """A port that is bound but never listens: an agent that does not answer."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


def write(path: Path, content: str | bytes) -> Path:
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


# --- 1. bad input is refused before agents start or are contacted ----------------------------------

@pytest.mark.parametrize("content, flags, message", [
    (None, [], "--dataset {ds} does not exist"),
    ('[{"tok_input": "1 2", "output": "x"}]', [], "--dataset {ds} record 0 field 'tok_input' is not a non-empty list"),
    (json.dumps([RECORD]), ["--max-samples", "0"], "--max-samples must be at least 1, got 0"),
])
def test_run_refuses_bad_input_before_starting_agents(tmp_path, content, flags, message):
    ds = tmp_path / "cnn_eval.json"
    if content is not None:
        write(ds, content)
    out = tmp_path / "out"
    r = llmbench("run", "--no-tui", "--agents", "1", "--dataset", ds, *flags, "--output", out, timeout=60)
    assert r.returncode == 2 and message.format(ds=ds) in r.stderr, r.stdout + r.stderr
    assert "agents listening" not in r.stdout and not list(out.glob("agent-*.log"))  # no agent was started


def test_coordinator_refuses_a_bad_dataset_before_contacting_agents(tmp_path, silent_port):
    start = time.monotonic()
    r = llmbench("coordinator", "--agents", f"127.0.0.1:{silent_port}", "--connect-timeout", "30",
                 "--dataset", tmp_path / "nope.json", "--output", tmp_path / "o8", timeout=60)
    assert r.returncode == 2 and f"--dataset {tmp_path / 'nope.json'} does not exist" in r.stderr, r.stderr
    assert "did not answer" not in r.stderr and time.monotonic() - start < 15


def test_a_bad_tokenizer_for_accuracy_fails_before_the_run(tmp_path, capsys):
    ds = write(tmp_path / "cnn_eval.json", json.dumps([RECORD]))
    message = error_of(capsys, "coordinator", "--agents", "127.0.0.1:1", "--mode", "accuracy", "--dataset", ds,
                       "--tokenizer", tmp_path / "no-tokenizer", "--output", tmp_path / "out")
    assert message == f"--tokenizer {tmp_path / 'no-tokenizer'} does not exist"


# --- 2. contradictory or surprising settings ---------------------------------------------------------

def test_compliance_in_accuracy_mode_is_refused(tmp_path, capsys):
    message = error_of(capsys, "coordinator", "--agents", "127.0.0.1:1", "--compliance", "TEST06", "--mode", "accuracy",
                       "--output", tmp_path / "out")
    assert message.startswith("--compliance TEST06 audits a performance run") and "drop --mode accuracy" in message
    assert not (tmp_path / "out").exists()


def test_a_run_far_longer_than_duration_says_so_before_it_starts(tmp_path, silent_port):
    r = llmbench("coordinator", "--agents", f"127.0.0.1:{silent_port}", "--connect-timeout", "1", "--max-samples",
                 "100", "--duration", "2", "--output", tmp_path / "out", timeout=60)
    assert r.returncode == 2 and "did not answer within 1 s" in r.stderr  # the note came first, then the agent
    (note,) = [line for line in r.stdout.splitlines() if line.startswith("expect about")]
    assert note.startswith("expect about 100 s of LoadGen test, not the 2 s of min_duration: 100 queries at 1 QPS "
                           "(min_query_count 100)"), note


def config(tmp_path: Path, **kw) -> CoordinatorConfig:
    return CoordinatorConfig(agents="127.0.0.1:1", output=tmp_path / "out", **kw)


def length_notes(cfg: CoordinatorConfig) -> list[str]:
    return [n for n in preflight.check(cfg).notes if n.startswith("expect about")]


def test_length_note_only_when_loadgen_runs_clearly_longer(tmp_path):
    assert length_notes(config(tmp_path, max_samples=100, duration_s=2, target_qps=100)) == []
    assert length_notes(config(tmp_path, max_samples=100, demo=settings.DEMO)) == []
    assert length_notes(config(tmp_path, max_samples=100, duration_s=2, mode="accuracy")) == []
    (note,) = length_notes(config(tmp_path, max_samples=200, duration_s=2, target_qps=10))
    assert note.startswith("expect about 20 s") and "rounded up to whole passes over the 200 performance" in note


def test_too_few_queries_for_early_stopping_is_said_before_the_run(tmp_path):
    """LoadGen calls a Server/Interactive run INVALID below 459 queries at p99; the demo and MLPerf's own
    settings are above it, a 60 s run at 5 QPS (300 queries) is not."""
    assert early_stopping.SERVER_QUERIES == 459  # 0.99 ** 459 < 0.01 <= 0.99 ** 458
    assert preflight.check(config(tmp_path, max_samples=100, demo=settings.DEMO)).notes == []
    assert preflight.check(config(tmp_path, max_samples=100, scenario="Interactive", demo=settings.DEMO)).notes == []
    assert preflight.check(config(tmp_path, max_samples=100, benchmark="llama3.1-8b-edge", scenario="SingleStream",
                                  demo=settings.DEMO)).notes == []
    assert preflight.check(config(tmp_path, max_samples=100, duration_s=60, target_qps=10)).notes == []
    (note,) = preflight.check(config(tmp_path, max_samples=100, duration_s=60, target_qps=5)).notes
    assert note.startswith("expect INVALID: LoadGen issues about 300 queries at 5 QPS") and "at least 459" in note
    assert preflight.check(config(tmp_path, max_samples=100, duration_s=60, target_qps=5, mode="accuracy")).notes == []
    offline = config(tmp_path, max_samples=100, duration_s=1, target_qps=5, scenario="Offline")
    assert not any(n.startswith("expect INVALID") for n in preflight.check(offline).notes)


# --- 3. exit statuses -------------------------------------------------------------------------------

def test_help_lists_the_exit_statuses(capsys):
    for command in ("run", "coordinator"):
        with pytest.raises(SystemExit) as exit_:
            main([command, "--help"])
        text = capsys.readouterr().out
        assert exit_.value.code == 0
        for status in ("0 ", "1 ", "2 ", "130 ", "143 "):
            assert f"\n  {status}" in text.split("exit status:")[1], text
        assert "results/<timestamp>" in text  # --output's default, the same for both


@pytest.mark.slow
def test_accuracy_fail_exits_1(sim_agents, tmp_path):
    from tokenizers_offline import llama3_tokenizer_file
    tokenizer = llama3_tokenizer_file()
    ds = write(tmp_path / "cnn_eval.json", json.dumps([dict(RECORD, tok_input=[128000, 10 + i, 20 + i],
                                                               output=f"Summary number {i}.") for i in range(8)]))
    out = tmp_path / "out"
    r = llmbench("coordinator", "--agents", addresses(sim_agents), "--scenario", "Offline", "--mode", "accuracy",
                 "--dataset", ds, "--tokenizer", tokenizer, "--output", out)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "accuracy: FAIL" in r.stdout and "Exit status 1: accuracy FAIL" in r.stdout
    assert "accuracy: FAIL" in (out / outputs.ACCURACY_FILE).read_text()


def run_until_loadgen(args: list[str]) -> tuple[subprocess.Popen, list[str]]:
    """Start `llmbench ...` and return once its first progress line (LoadGen is running) is out."""
    proc = subprocess.Popen([*LLMBENCH, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()
    deadline = time.monotonic() + 60
    while not any("samples done" in line for line in lines):
        assert proc.poll() is None and time.monotonic() < deadline, "".join(lines) + proc.stderr.read()
        time.sleep(0.05)
    return proc, lines


@pytest.mark.slow
@pytest.mark.parametrize("sig, status, said", [(signal.SIGTERM, 143, "interrupted by SIGTERM"),
                                               (signal.SIGINT, 130, "interrupted after")])
def test_interrupted_run_names_its_folder_and_leaves_a_report(sim_agents, tmp_path, sig, status, said):
    out = tmp_path / "out"
    proc, lines = run_until_loadgen(["coordinator", "--agents", addresses(sim_agents), "--scenario", "Server",
                                     "--target-qps", "20", "--duration", "60", "--max-samples", "40",
                                     "--progress", "0.2", "--output", str(out)])
    proc.send_signal(sig)
    assert proc.wait(30) == status, "".join(lines)
    err = proc.stderr.read()
    assert f"llmbench coordinator: {said}" in err and f"partial logs and report.md in {out.resolve()}" in err, err
    report = (out / outputs.REPORT_FILE).read_text()
    assert "interrupted" in report.splitlines()[0] and "no LoadGen result" in report and "samples answered" in report
    done = int(err.split(" after ")[1].split()[0])
    assert f"| samples answered | {done} |" in report  # the line and the report tell the same count


# --- 4. numbers out of range name the flag and the value ----------------------------------------------

@pytest.mark.parametrize("flag, value, message", [
    ("--target-qps", "1e-9", "--target-qps 1e-09: LoadGen would issue"),
    ("--target-qps", "nan", "--target-qps must be positive and at most 1e+06, got nan"),
    ("--target-qps", "inf", "--target-qps must be positive and at most 1e+06, got inf"),
    ("--duration", "1e12", "--duration must be positive and at most 86400 s (a day), got 1e+12"),
    ("--duration", "0", "--duration must be positive"),
    ("--connect-timeout", "-1", "--connect-timeout must be > 0 and <= 3600, got -1"),
    ("--ready-timeout", "0", "--ready-timeout must be > 0 and <= 86400, got 0"),
    ("--agent-timeout", "nan", "--agent-timeout must be > 0 and <= 3600, got nan"),
    ("--progress", "-1", "--progress must be >= 0.1 and <= 3600 (0: no progress lines), got -1"),
    ("--max-samples", "-3", "--max-samples must be at least 1, got -3"),
    ("--status-port", "70000", "--status-port 70000: not a port number"),
    ("--metrics-port", "-1", "--metrics-port -1: not a port number"),
])
def test_coordinator_numbers_out_of_range(tmp_path, capsys, flag, value, message):
    got = error_of(capsys, "coordinator", "--agents", "127.0.0.1:1", flag, value, "--output", tmp_path / "out")
    assert got.startswith(message), got
    assert not (tmp_path / "out").exists()  # refused before anything was made


def test_offline_queries_beyond_reason_are_refused(tmp_path, capsys):
    got = error_of(capsys, "coordinator", "--agents", "127.0.0.1:1", "--scenario", "Offline", "--target-qps", "1e6",
                   "--duration", "86400", "--output", tmp_path / "out")
    assert got.startswith("--target-qps 1e+06 with min_duration 86400 s: LoadGen would issue") and "10,000,000" in got


@pytest.mark.parametrize("flags, message", [
    (["--agents", "0"], "--agents must be >= 1 and <= 256, got 0"),
    (["--engine", "simulated", "--tokens-per-s", "-5"], "--tokens-per-s must be > 0 and <= 1e+09, got -5"),
    (["--progress", "nan"], "--progress must be >= 0.1 and <= 3600 (0: no progress lines), got nan"),
])
def test_run_numbers_out_of_range(tmp_path, capsys, flags, message):
    assert error_of(capsys, "run", "--no-tui", *flags, "--output", tmp_path / "out") == message


# --- 5. file errors name the flag and the path, before the work -------------------------------------

def test_dataset_file_errors_name_the_flag_and_path(tmp_path, capsys):
    def refused(path: Path) -> str:
        return error_of(capsys, "coordinator", "--agents", "127.0.0.1:1", "--dataset", path, "--output", tmp_path / "o")
    binary = write(tmp_path / "cnn_eval.json", b"\xff\xfe[]")
    assert refused(binary) == (f"--dataset {binary}: not UTF-8 text (byte 0xff at offset 0); expected JSON or JSONL, "
                               ".parquet, .arrow or a save_to_disk folder")
    pytest.importorskip("pyarrow")
    junk = write(tmp_path / "data.arrow", b"junk!")
    assert refused(junk).startswith(f"--dataset {junk}: not an Arrow file, stream or IPC format (")
    parquet = write(tmp_path / "data.parquet", b"PAR1 not really")
    assert refused(parquet).startswith(f"--dataset {parquet}: not a readable Parquet file (")


def test_output_that_is_a_file_is_refused(tmp_path, capsys):
    afile = write(tmp_path / "afile", "x")
    for command in (["coordinator", "--agents", "127.0.0.1:1"], ["run", "--no-tui"]):
        assert error_of(capsys, *command, "--output", afile) == f"--output {afile} is a file, not a folder"
    assert error_of(capsys, "coordinator", "--agents", "127.0.0.1:1", "--output", afile / "sub") == \
        f"--output {afile / 'sub'}: cannot write there (Not a directory)"


def test_accuracy_and_compliance_outputs_are_checked_before_the_work(tmp_path, capsys):
    afile = write(tmp_path / "afile", "x")
    missing = tmp_path / "missing"  # the inputs do not exist either: the output check must come first
    assert error_of(capsys, "accuracy", "--log", missing, "--dataset", missing, "--tokenizer", missing,
                    "--json", tmp_path / "no" / "acc.json") == \
        f"--json {tmp_path / 'no' / 'acc.json'}: the folder {tmp_path / 'no'} does not exist"
    assert error_of(capsys, "accuracy", "--log", missing, "--dataset", missing, "--tokenizer", missing,
                    "--json", tmp_path) == f"--json {tmp_path} is a folder, not a file"
    assert error_of(capsys, "compliance", "test06", "--log-dir", missing, "--output-dir", afile / "out") == \
        f"--output-dir {afile / 'out'}: cannot write there (Not a directory)"
    assert error_of(capsys, "compliance", "test06", "--write-audit-config", afile) == \
        f"--write-audit-config {afile} is a file, not a folder"


# --- 6. boolean token ids ----------------------------------------------------------------------------

def test_boolean_token_ids_are_refused_with_the_record(tmp_path):
    path = write(tmp_path / "cnn_eval.json", json.dumps([RECORD, dict(RECORD, tok_input=[1, True, False])]))
    with pytest.raises(ValueError, match=r"record 1 field 'tok_input' is not a non-empty list of token ids: "
                                         r"item 1 is true \(a boolean\)$"):
        loaders.load(str(path))
    big = write(tmp_path / "big.json", json.dumps([dict(RECORD, tok_input=[1, 2**31])]))
    with pytest.raises(ValueError, match=r"record 0 .* item 1 is 2147483648$"):
        loaders.load(str(big))


# --- 7, 8, 10: accuracy without references, a reused folder, coordinator's default output ----------------

def test_an_earlier_runs_files_are_replaced_only_once_this_runs_are_in(tmp_path):
    folder = tmp_path / "out"
    (folder / "sub").mkdir(parents=True)
    for name in ("report.md", "accuracy.txt", "agent-12.log", "mlperf_log_detail.txt", "notes.txt", "agent-x.log"):
        write(folder / name, "old")
    stale, (replaced, kept) = outputs.check_folder(folder)
    assert [p.name for p in stale] == ["accuracy.txt", "mlperf_log_detail.txt", "report.md"]  # `run` rewrites agent logs
    assert replaced == (f"--output {folder}: an earlier llmbench run's files (accuracy.txt, mlperf_log_detail.txt, "
                        "report.md) will be replaced once this run's files are all written, and stay as they are if "
                        "it does not finish")
    assert kept == f"--output {folder} also holds 3 entries llmbench did not write, left as they are: " \
                   "agent-x.log, notes.txt, sub/"
    assert len(list(folder.iterdir())) == 7  # checking removes nothing: a run that fails to start loses nothing
    staging = Staging(folder, stale)
    write(staging.start() / "report.md", "new")
    assert (folder / "report.md").read_text() == "old"  # a run's files stay apart until they are all written
    staging.publish()
    assert sorted(p.name for p in folder.iterdir()) == ["agent-12.log", "agent-x.log", "notes.txt", "report.md", "sub"]
    assert (folder / "report.md").read_text() == "new"


def test_a_users_own_files_under_our_names_are_refused_not_deleted(tmp_path):
    write(tmp_path / "report.md", "# My notes\n")
    write(tmp_path / "accuracy.txt", "mine")
    with pytest.raises(ValueError, match=r"holds accuracy\.txt, report\.md, which this run would overwrite, but no "
                                         r"earlier llmbench run wrote them"):
        outputs.check_folder(tmp_path)
    assert (tmp_path / "report.md").read_text() == "# My notes\n"
    write(tmp_path / "report.md", "# llmbench report: Server performance\n")  # ours: the folder is a run's
    assert [p.name for p in outputs.check_folder(tmp_path)[0]] == ["accuracy.txt", "report.md"]


def test_a_run_that_failed_before_loadgen_can_be_run_again_into_its_folder(tmp_path):
    """Its agent logs were refused as "no earlier llmbench run wrote them" on the second try."""
    out = tmp_path / "out"
    for attempt in (1, 2):
        done = llmbench("run", "--engine", "simulated", "--agents", "1", "--agent-args", "--max-batch 0",
                        "--no-tui", "--output", out)
        assert done.returncode == 2, (attempt, done.stderr)
        assert "no earlier llmbench run wrote them" not in done.stderr, done.stderr
        assert "--max-batch" in done.stderr  # the agent's own error, named from its log
    log = (out / "agent-0.log").read_text()
    assert log.startswith(f"{outputs.AGENT_LOG_HEADER} 0: agent --host 127.0.0.1 --port 0 --engine simulated")
    (out / "agent-0.log").write_text("my own notes\n")  # a user's file under our name is still refused
    with pytest.raises(ValueError, match=r"holds agent-0\.log, which this run would overwrite"):
        outputs.check_folder(out)


def test_a_folder_or_link_under_our_names_is_refused(tmp_path):
    (tmp_path / "mlperf_log_detail.txt").mkdir()  # LoadGen could not log, and the run would crash at the end
    with pytest.raises(ValueError, match=r"mlperf_log_detail\.txt/ must be a plain file"):
        outputs.check_folder(tmp_path)
    (tmp_path / "mlperf_log_detail.txt").rmdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "report.md").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ValueError, match=r"report\.md/ must be a plain file"):
        outputs.check_folder(tmp_path)


def test_default_output_folders_are_never_shared(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folders = [coordinator.output_folder(argparse.Namespace(output=None)) for _ in range(3)]  # within one second
    assert len(set(folders)) == 3 and all(f.is_dir() and f.parent == Path("results") for f in folders)


def test_synthetic_sample_count_is_bounded_before_anything_starts(tmp_path, capsys):
    err = error_of(capsys, "coordinator", "--agents", "127.0.0.1:1", "--max-samples", "100000000",
                   "--output", tmp_path / "o")
    assert "--max-samples 100,000,000: synthetic prompts are made in memory, at most 100,000" in err


@pytest.mark.slow
def test_default_output_synthetic_accuracy_then_reused_folder(sim_agents, tmp_path):
    r = llmbench("coordinator", "--agents", addresses(sim_agents), "--scenario", "Offline", "--mode", "accuracy",
                 "--max-samples", "10", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    (out,) = (tmp_path / "results").iterdir()  # results/<timestamp>, as `llmbench run` does
    assert ("accuracy: not scored: synthetic data has no reference summaries (ROUGE needs --dataset cnn_eval.json "
            "or CNN/DailyMail articles)") in r.stdout
    assert "synthetic data has no reference summaries" in (out / outputs.REPORT_FILE).read_text()
    write(out / outputs.ACCURACY_FILE, "rouge1 from an older run")
    write(out / "notes.txt", "mine")

    r = llmbench("coordinator", "--agents", addresses(sim_agents), "--scenario", "Server", "--max-samples", "20",
                 "--target-qps", "100", "--duration", "0.2", "--output", out, cwd=tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr  # 100 queries: too few for LoadGen's early stopping
    assert "Result is : INVALID" in r.stdout and "Exit status 1: LoadGen's result is INVALID" in r.stdout
    assert re.search(rf"--output {re.escape(str(out))}: an earlier llmbench run's files \(accuracy\.txt, ", r.stdout)
    assert re.search(rf"replaced \d+ files of an earlier llmbench run in {re.escape(str(out))}", r.stdout), r.stdout
    assert f"--output {out} also holds 1 entry llmbench did not write, left as they are: notes.txt" in r.stdout
    assert not (out / outputs.ACCURACY_FILE).exists() and (out / "notes.txt").read_text() == "mine"
    assert "Server performance" in (out / outputs.REPORT_FILE).read_text().splitlines()[0]


@pytest.mark.slow
def test_a_tokenizer_larger_than_the_agents_vocabulary_is_named(tmp_path):
    """Llama-3's tokenizer on raw articles for model tiny (1,000 ids): the error used to blame record 0's
    'tok_input', a field the file does not have."""
    tokenizer = llama3_tokenizer_file()
    ds = write(tmp_path / "articles.jsonl", json.dumps({"article": "Shares rose.", "highlights": "Up."}) + "\n")
    r = llmbench("run", "--agents", "1", "--no-tui", "--mode", "accuracy", "--scenario", "Offline",
                 "--dataset", ds, "--tokenizer", tokenizer, "--output", tmp_path / "out", timeout=180)
    assert r.returncode == 2, r.stdout + r.stderr
    errors = [line for line in r.stderr.splitlines() if "error: " in line]
    assert errors == [f"llmbench run: error: --tokenizer {tokenizer} does not fit the model: its ids go up to 128255 "
                      f"(128256 tokens) but the model's vocabulary is 1000; --dataset {ds} record 0 tokenizes to "
                      f"id 128000: give the model's own tokenizer"], r.stderr


@pytest.mark.slow
def test_prompts_no_agent_kv_cache_can_hold_are_refused_at_the_start(tmp_path):
    r = llmbench("run", "--agents", "1", "--no-tui", "--agent-args", "--num-kv-blocks 4 --block-size 16",
                 "--output", str(tmp_path / "out"), timeout=180)
    assert r.returncode == 2, r.stdout + r.stderr
    assert re.search(r"the longest prompt of synthetic\(n=100, seed=0\) needs \d+ KV tokens with its 128 new tokens, but the "
                     r"largest agent KV cache \(127\.0\.0\.1:\d+\) holds 64", r.stderr), r.stdout + r.stderr
    assert "samples done" not in r.stdout  # refused before LoadGen issued anything
