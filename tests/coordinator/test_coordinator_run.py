"""End to end: real agent processes on loopback, the real coordinator CLI, real LoadGen."""
from __future__ import annotations

import argparse
import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

from llmbench.coordinator.data import loaders
from llmbench.coordinator.commands import run_local
from llmbench.coordinator.loadgen.detail_log import generated_sample_count
from llmbench.coordinator.loadgen.summary import read_summary
from llmbench.proto import pb, rpc

CLI = [sys.executable, "-c", "import sys; from llmbench.cli import main; sys.exit(main())"]
SIM_VOCAB = 128256  # the simulated engine's (Llama 3's)


def start_agents(folder: Path, n: int, engine: str = "simulated", tokens_per_s: float = 20000) -> list:
    folder.mkdir(parents=True, exist_ok=True)
    args = argparse.Namespace(agents=n, engine=engine, model="tiny", tokens_per_s=tokens_per_s, agent_args="")
    return run_local.start_agents(args, folder)


def llmbench(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout)


def addresses(agents) -> str:
    return ",".join(a.address for a in agents)


def accuracy_entries(out: Path) -> list[dict]:
    return json.loads((out / "mlperf_log_accuracy.json").read_text())


def outputs_by_sample(entries: list[dict], n: int) -> dict[int, np.ndarray]:
    """Each qsl index exactly once, data = token_count little-endian int32 ids."""
    indices = sorted(e["qsl_idx"] for e in entries)
    assert indices == list(range(n)), f"samples not answered exactly once: {indices}"
    tokens = {}
    for e in entries:
        data = np.frombuffer(bytes.fromhex(e["data"]), dtype="<i4")
        assert e["token_count"] == len(data) > 0
        tokens[e["qsl_idx"]] = data
    return tokens


def generate(address: str, prompt: np.ndarray, max_new_tokens: int) -> list[int]:
    with grpc.insecure_channel(address) as channel:
        replies = rpc.AgentStub(channel).Generate(pb.GenerateRequest(
            tokens=pb.TokenList(ids=prompt.tolist()), max_new_tokens=max_new_tokens), timeout=30)
        return [t for r in replies for t in r.tokens]


def progress_counts(stdout: str) -> tuple[int, int]:
    """(done, total) of the last progress line: the total is what LoadGen generated once its log says."""
    last = [line for line in stdout.splitlines() if "samples done" in line][-1]
    done, total = last.split("]")[1].split()[0].split("/")
    return int(done), int(total)


def port_closed(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    with socket.socket() as s:
        return s.connect_ex((host, int(port))) != 0


@pytest.mark.slow
def test_offline_accuracy_answers_every_sample_once(sim_agents, tmp_path):
    out = tmp_path / "out"
    r = llmbench("coordinator", "--agents", addresses(sim_agents), "--scenario", "Offline", "--mode", "accuracy",
                 "--max-samples", "40", "--output", str(out))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "LoadGen ran in accuracy mode" in r.stdout and f"Results: {out.resolve()} (LoadGen logs)" in r.stdout
    tokens = outputs_by_sample(accuracy_entries(out), 40)
    assert all(len(t) == 128 for t in tokens.values())  # the simulated engine never emits EOS
    ds = loaders.load("synthetic", max_samples=40, vocab_size=SIM_VOCAB)
    for i in (0, 17, 39):  # what LoadGen logged is what the agent generates for that sample's prompt
        assert generate(sim_agents[0].address, ds.prompts[i], 128) == tokens[i].tolist()
    shares = [int(x.split()[-1]) for x in r.stdout.split("Queries per agent: ")[1].splitlines()[0].split(", ")]
    assert sum(shares) == 40 and min(shares) > 0  # both agents served


@pytest.mark.slow
def test_server_performance_run_reports_its_result(sim_agents, tmp_path):
    """What a Server run reports, not how fast this box is: whether it comes out VALID depends on the
    machine's load, and the exit status must say which (0 VALID, 1 INVALID)."""
    out = tmp_path / "out"
    r = llmbench("coordinator", "--agents", addresses(sim_agents), "--scenario", "Server", "--max-samples", "50",
                 "--target-qps", "100", "--duration", "5.2", "--progress", "1", "--output", str(out))
    summary = read_summary(out)
    assert_exit_follows_result(r, summary)
    assert summary.scenario == "Server" and summary.samples_per_s > 0 and summary.ttft_p99_ms > 0
    assert summary.ttft_limit_ms == 2000 and summary.tpot_limit_ms == 100 and "TTFT p99" in r.stdout
    assert progress_counts(r.stdout) == (generated_sample_count(out),) * 2
    assert "target_qps: 100 (mlperf.conf: 1) - --target-qps" in r.stdout  # overrides shown as such


def test_single_stream_edge_run_answers_every_query(sim_agents, tmp_path):
    """llama3.1-8b-edge SingleStream through the mesh: LoadGen issues one query at a time, as many as our
    settings expect (max(min_query_count 100, 2 x 0.5 s / mlperf.conf's 10 ms) plus a pass over 20 samples),
    and reports its 90th-percentile latency, with no TTFT/TPOT limits."""
    out = tmp_path / "out"
    r = llmbench("coordinator", "--agents", addresses(sim_agents), "--benchmark", "llama3.1-8b-edge",
                 "--scenario", "SingleStream", "--max-samples", "20", "--duration", "0.5", "--progress", "0.5",
                 "--output", str(out))
    assert r.returncode in (0, 1) and "ERROR" not in r.stdout, r.stdout + r.stderr  # VALID or not: a finished run
    assert "LoadGen settings: benchmark llama3.1-8b-edge, model llama3_1-8b-edge, scenario SingleStream" in r.stdout
    summary = read_summary(out)
    assert (summary.scenario, summary.mode, summary.latency_percentile) == ("SingleStream", "PerformanceOnly", 90)
    assert summary.latency_ms > 0 and summary.ttft_p99_ms > 0 and summary.ttft_limit_ms is None
    assert progress_counts(r.stdout) == (120, 120) and generated_sample_count(out) == 120  # every query answered
    report = (out / "report.md").read_text()
    assert report.startswith("# llmbench report: llama3.1-8b-edge SingleStream performance")
    assert "Queries: 120 answered, 0 failed" in report and "90th percentile latency (ms)" in report


@pytest.mark.slow
def test_killed_agent_queries_are_redispatched_once(tmp_path):
    agents = start_agents(tmp_path / "agents", 3, tokens_per_s=1500)
    out = tmp_path / "out"
    try:
        proc = subprocess.Popen([*CLI, "coordinator", "--agents", addresses(agents), "--scenario", "Offline",
                                 "--mode", "accuracy", "--max-samples", "60", "--output", str(out)],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
        reader.start()
        deadline = time.monotonic() + 30
        while not any(line.startswith("LoadGen settings") for line in lines) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)  # tokens are flowing: ~20 queries in flight on each agent
        agents[0].process.send_signal(signal.SIGKILL)
        assert proc.wait(60) == 0, "".join(lines)
        reader.join(5)
    finally:
        run_local.stop_agents(agents)
    text = "".join(lines)
    assert f"agent {agents[0].address} lost" in text and "re-dispatched" in text, text
    tokens = outputs_by_sample(accuracy_entries(out), 60)
    assert all(len(t) == 128 for t in tokens.values())  # whole outputs, resumed where they stopped


@pytest.mark.slow
def test_llmbench_run_tiny_server_accuracy(tmp_path):
    out = tmp_path / "run"
    r = llmbench("run", "--mode", "accuracy", "--max-samples", "16", "--output", str(out))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "2 local agents (paged engine, model tiny), Server accuracy" in r.stdout
    # They share the host's memory (no GPU here): each sizes its KV cache from half the default 0.9.
    assert "Host memory is shared: each of the 2 CPU agents sizes its KV cache from 0.45 of" in r.stdout
    tokens = outputs_by_sample(accuracy_entries(out), 16)
    assert all(1 <= len(t) <= 128 and t.max() < 1000 for t in tokens.values())  # the tiny model's vocabulary
    assert "No errors encountered during test" in (out / "mlperf_log_summary.txt").read_text()
    logs = [(out / f"agent-{i}.log").read_text() for i in range(2)]
    assert all(re.search(r"KV cache: \d+ blocks .*: 0\.45 of [\d.]+ GiB available host memory", log) for log in logs), logs
    addrs = [run_local.LISTENING.search(log).group(1) for log in logs]
    assert all(port_closed(a) for a in addrs)  # agents stopped on exit


@pytest.mark.slow
def test_llmbench_run_demo_runs_end_to_end(tmp_path):
    """The README's main command with no arguments: its rate measured on its agents (a short Offline probe),
    so it is VALID on an idle box and a busy one alike; whether it is still depends on the box, and the exit
    status must say which."""
    r = subprocess.run([*CLI, "run"], capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert "Demo scale" in r.stdout and "Differs from MLPerf's settings" in r.stdout
    rate = re.search(r"^Demo rate: ([\d.]+) QPS, 0.4 of the ([\d.]+) samples/s these agents completed", r.stdout, re.M)
    assert rate and float(rate[1]) == max(round(float(rate[2]) * 0.4, 2), 0.1), r.stdout
    assert f"target_qps: {float(rate[1]):g} (mlperf.conf: 1) - demo: 0.4 of the" in r.stdout
    (out,) = (tmp_path / "results").iterdir()  # ./results/<timestamp>
    summary = read_summary(out)
    assert_exit_follows_result(r, summary)
    assert summary.scenario == "Server" and f"Results: {out.resolve()}" in r.stdout


def assert_exit_follows_result(r: subprocess.CompletedProcess, summary) -> None:
    if summary.result == "VALID":
        assert r.returncode == 0 and "Result is : VALID" in r.stdout, r.stdout + r.stderr
    else:
        assert summary.result == "INVALID" and summary.problems, r.stdout + r.stderr
        assert r.returncode == 1 and "Exit status 1: LoadGen's result is INVALID" in r.stdout, r.stdout + r.stderr


@pytest.mark.slow
def test_accuracy_run_on_articles_with_hf_model_and_tokenizer(tmp_path):
    """Raw CNN/DM-style articles -> MLPerf prompts with the model's tokenizer -> agents serving that HF
    folder -> LoadGen accuracy log -> ROUGE table (random weights: the numbers are meaningless)."""
    torch = pytest.importorskip("torch")
    from transformers import LlamaConfig, LlamaForCausalLM
    from tokenizers_offline import TEXTS, tiny_tokenizer
    model_dir = tiny_tokenizer(tmp_path / "model")
    vocab = json.loads((model_dir / "config.json").read_text())["vocab_size"]
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                                 bos_token_id=0, eos_token_id=1)).save_pretrained(model_dir)
    articles = tmp_path / "articles.jsonl"
    articles.write_text("".join(json.dumps({"article": " ".join(TEXTS[i:] + TEXTS[:i]), "highlights": TEXTS[i]}) + "\n"
                                for i in range(4)))
    out = tmp_path / "out"
    r = llmbench("run", "--model", str(model_dir), "--scenario", "Offline", "--mode", "accuracy",
                 "--dataset", str(articles), "--tokenizer", str(model_dir), "--output", str(out))
    assert r.returncode == 1 and "Exit status 1: accuracy FAIL" in r.stdout, r.stdout + r.stderr  # random weights
    outputs_by_sample(accuracy_entries(out), 4)
    table = (out / "accuracy.txt").read_text()
    assert "rouge1" in table and "gen_num" in table and "rouge1" in r.stdout


def test_unreachable_agent_fails_fast_with_one_line(tmp_path):
    with socket.socket() as s:  # bound, never listening: refused, and no other test can take the port meanwhile
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        start = time.monotonic()
        r = llmbench("coordinator", "--agents", f"127.0.0.1:{port}", "--connect-timeout", "1.5",
                     "--output", str(tmp_path / "out"), timeout=30)
    assert r.returncode == 2 and time.monotonic() - start < 10
    errors = [line for line in r.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and f"agent 127.0.0.1:{port} did not answer within" in errors[0], r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("flags, message", [
    (["--scenario", "MultiStream"], "unknown scenario 'MultiStream'"),
    (["--scenario", "SingleStream"], "--scenario SingleStream needs --benchmark llama3.1-8b-edge"),
    (["--benchmark", "llama3.1-8b-edge", "--scenario", "Server"], "--scenario Server needs --benchmark llama3.1-8b"),
    (["--benchmark", "llama3.1-8b-edge", "--target-qps", "5"], "--target-qps: SingleStream has no target rate"),
    (["--mode", "fast"], "unknown mode 'fast'"),
    (["--agents", "localhost"], "expected HOST:PORT"),
    (["--user-conf", "/nonexistent/user.conf"], "user.conf /nonexistent/user.conf does not exist"),
])
def test_bad_input_is_one_clear_line(tmp_path, flags, message):
    args = {"--agents": "127.0.0.1:1", "--output": str(tmp_path / "out")}
    for flag, value in zip(flags[::2], flags[1::2]):
        args[flag] = value
    r = llmbench("coordinator", *[x for kv in args.items() for x in kv], timeout=30)
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr


def test_compliance_test06_run_is_audited_and_checked(sim_agents, tmp_path):
    """--compliance TEST06: LoadGen runs under TEST06's audit.config (it logs responses in a
    performance run) and the three checks run on that log at the end."""
    out = tmp_path / "out"
    r = llmbench("coordinator", "--agents", addresses(sim_agents), "--scenario", "Server", "--max-samples", "50",
                 "--target-qps", "100", "--duration", "3", "--compliance", "TEST06", "--output", str(out))
    assert r.returncode == 0, r.stdout + r.stderr
    assert (out / "audit.config").is_file() and accuracy_entries(out)  # a performance run that logged responses
    assert "first token check" in r.stdout and "TEST06: PASS" in r.stdout, r.stdout
    assert "TEST06 verification complete" in (out / "verify_accuracy.txt").read_text()
    report = (out / "report.md").read_text()
    assert "## Compliance" in report and "**Outcome: TEST06 PASS (llama3.1-8b Server; " in report
    # LoadGen's own verdict under the audit settings is shown as such, and the settings are the audited ones.
    assert "LoadGen's performance verdict does not apply" in r.stdout
    assert "min_duration (ms): 0 (mlperf.conf: 600000) - TEST06's audit.config" in r.stdout
    assert "\n  min_query_count: 100\n" in r.stdout


def test_stray_audit_config_in_the_working_folder_is_ignored(sim_agents, tmp_path):
    (tmp_path / "audit.config").write_text("*.*.mode = 1\n")  # would make LoadGen run accuracy-only
    out = tmp_path / "out"
    r = subprocess.run([*CLI, "coordinator", "--agents", addresses(sim_agents), "--scenario", "Server",
                        "--max-samples", "20", "--target-qps", "100", "--duration", "2", "--output", str(out)],
                       capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert r.returncode == 1 and "LoadGen's result is INVALID" in r.stdout, r.stdout + r.stderr  # too few queries
    assert read_summary(out).mode == "PerformanceOnly"
