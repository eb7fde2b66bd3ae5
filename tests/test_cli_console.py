"""What the commands leave on the console: a reader that leaves early (`| head`) is no error, and
`llmbench run` says each agent is ready once and where its results are once."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tokenizers_offline import tiny_tokenizer

CLI = [sys.executable, "-c", "import sys; from llmbench.cli import main; sys.exit(main())"]


def test_accuracy_into_a_pipe_closed_early_ends_without_an_error(tmp_path):
    tok = tiny_tokenizer(tmp_path / "tok")
    data = tmp_path / "validation.jsonl"
    data.write_text(json.dumps({"article": "one", "highlights": "Shares rose today."}) + "\n")
    log = tmp_path / "mlperf_log_accuracy.json"
    log.write_text(json.dumps([{"seq_id": 0, "qsl_idx": 0, "data": "0100000002000000", "token_count": 2}]))
    proc = subprocess.Popen([*CLI, "accuracy", "--log", str(log), "--dataset", str(data), "--tokenizer", str(tok)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.close()  # like `| head -0`: gone before the command prints its first line
    err = proc.stderr.read()
    assert proc.wait(120) == 141, err  # as a process ended by SIGPIPE
    assert err == "", err  # no traceback, no "Exception ignored ... BrokenPipeError"


@pytest.mark.slow
def test_run_says_each_agent_is_ready_once_and_where_the_results_are_once(tmp_path):
    out = tmp_path / "out"
    done = subprocess.run([*CLI, "run", "--engine", "simulated", "--tokens-per-s", "20000", "--scenario", "Offline",
                           "--duration", "1", "--max-samples", "20", "--output", str(out), "--no-tui"],
                          capture_output=True, text=True, timeout=300)
    lines = (done.stdout + done.stderr).splitlines()
    listening = next(line for line in lines if line.startswith("agents listening on "))
    addresses = listening.removeprefix("agents listening on ").split(", ")
    assert len(addresses) == 2
    for address in addresses:
        said = [line for line in lines if f"agent {address}" in line]
        assert len(said) == 1 and "KV tokens" in said[0], said
    folder = [line for line in lines if line.startswith(("Results:", "LoadGen logs:"))]
    assert folder == [f"Results: {out.resolve()} (LoadGen logs, agent-N.log)"], folder
    assert lines[-1].startswith("Wall time ")
