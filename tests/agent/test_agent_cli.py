"""`llmbench agent` and `llmbench generate` as real subprocesses (the simulated engine where no model is needed)."""
import json
import signal
import socket
import subprocess
import time

import pytest

from cli_processes import llmbench
from hf_reference import save_hf

def one_error_line(result: subprocess.CompletedProcess, command: str) -> str:
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"llmbench {command}: error: "), result.stderr
    return lines[0]


def prompts_jsonl(n: int) -> str:
    return "".join(json.dumps({"id": f"p{i}", "tokens": [1, 2 + i, 3]}) + "\n" for i in range(n))


@pytest.mark.slow
def test_agent_subprocess_generate_and_sigterm(agents):
    agent = agents("--engine", "simulated", "--tokens-per-s", "5000", "--agent-id", "sim-1")
    agent.wait_serving()
    out = llmbench("generate", "--agent", agent.address, "--max-new-tokens", "7", "--ignore-eos",
                   stdin=prompts_jsonl(30))
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["id"] for r in rows] == [f"p{i}" for i in range(30)]
    assert all(len(r["tokens"]) == 7 and r["finish_reason"] == "length" and "text" not in r for r in rows)

    text = llmbench("generate", "--agent", agent.address, stdin='{"id": 1, "text": "hi"}\n')
    assert '"error": "model simulated has no tokenizer; send token ids"' in text.stdout
    one_error_line(text, "generate")

    assert agent.terminate() == 0
    log = agent.stderr()
    assert "ready: model simulated (simulated engine" in log and "Traceback" not in log


@pytest.mark.slow
def test_generate_in_process_matches_agent(agents, tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text(prompts_jsonl(5) + "\n")  # a blank line is skipped
    local = llmbench("generate", "--engine", "simulated", "--input", str(path), "--max-new-tokens", "4")
    assert local.returncode == 0, local.stderr
    agent = agents("--engine", "simulated")
    agent.wait_serving()
    remote = llmbench("generate", "--agent", agent.address, "--input", str(path), "--max-new-tokens", "4")
    assert remote.returncode == 0, remote.stderr
    assert local.stdout == remote.stdout and len(local.stdout.splitlines()) == 5


@pytest.mark.slow
def test_generate_bad_input_names_the_line():
    r = llmbench("generate", "--engine", "simulated", stdin=prompts_jsonl(2) + '{"id": 3, "tokens": [1, "x"]}\n')
    assert "line 3" in one_error_line(r, "generate") and r.stdout == ""
    r = llmbench("generate", "--engine", "simulated", stdin='{"id": 1, "tokens": [1]}\nnot json\n')
    assert "line 2: not valid JSON" in one_error_line(r, "generate")
    r = llmbench("generate", "--engine", "simulated", stdin='{"id": 1, "tokens": []}\n{"id": 2, "tokens": [5]}\n')
    assert "1 of 2 prompts failed; first: line 1: prompt is empty" in one_error_line(r, "generate")
    assert [json.loads(line).get("error") for line in r.stdout.splitlines()] == ["prompt is empty", None]


def test_generate_unreachable_agent_fails_fast():
    with socket.socket() as held:  # bound, never listening: refused, and no other test can take the port
        held.bind(("127.0.0.1", 0))
        start = time.monotonic()
        r = llmbench("generate", "--agent", f"127.0.0.1:{held.getsockname()[1]}", "--connect-timeout", "1",
                     stdin=prompts_jsonl(1))
    assert "does not answer" in one_error_line(r, "generate")
    assert time.monotonic() - start < 15


@pytest.mark.slow
def test_agent_bad_model(tmp_path):
    assert "/no/such/model" in one_error_line(llmbench("agent", "--model", "/no/such/model", "--port", "0"), "agent")
    (tmp_path / "config.json").write_text("{not json")
    assert "not valid JSON" in one_error_line(llmbench("agent", "--model", str(tmp_path), "--port", "0"), "agent")
    assert "--model is required" in one_error_line(llmbench("agent", "--port", "0"), "agent")
    assert "--device" in one_error_line(llmbench("agent", "--engine", "simulated", "--device", "tpu"), "agent")


@pytest.mark.slow
def test_a_truncated_shard_is_one_line_naming_it(tmp_path):
    save_hf(tmp_path, max_shard_size="100KB")
    shard = sorted(tmp_path.glob("*.safetensors"))[1]
    with shard.open("r+b") as f:
        f.truncate(5000)
    expected = f"{shard} is truncated or not a safetensors file: "
    r = llmbench("generate", "--model", tmp_path, "--device", "cpu", stdin=prompts_jsonl(1))
    assert expected in one_error_line(r, "generate")
    r = llmbench("agent", "--model", tmp_path, "--device", "cpu", "--port", "0")
    # the agent listens (and logs its port) before it loads the weights; then one error line
    errors = [line for line in r.stderr.splitlines() if "error: " in line]
    assert r.returncode == 2 and len(errors) == 1 and "Traceback" not in r.stderr, r.stderr
    assert errors[0].startswith("llmbench agent: error: ") and expected in errors[0]


@pytest.mark.slow
def test_agent_port_in_use(agents):
    first = agents("--engine", "simulated")
    port = first.address.rsplit(":", 1)[1]
    second = llmbench("agent", "--engine", "simulated", "--port", port, timeout=60)
    assert f"cannot listen on 127.0.0.1:{port}" in one_error_line(second, "agent")
    assert first.proc.poll() is None


def test_agent_on_a_host_that_does_not_resolve_is_one_line_also_on_port_0():
    bad = llmbench("agent", "--engine", "simulated", "--host", "999.1.1.1", "--port", "0", timeout=60)
    assert bad.returncode == 2, bad
    last = bad.stderr.strip().splitlines()[-1]  # after the warning that a non-loopback host is exposed
    assert last.startswith("llmbench agent: error: cannot listen on 999.1.1.1:0 ("), bad.stderr
    assert "add_port" not in bad.stderr  # gRPC's own C++ error line never shows


@pytest.mark.parametrize("engine", [["--engine", "simulated"], ["--model", "tiny", "--device", "cpu"]],
                         ids=["loaded", "maybe-loading"])
def test_ctrl_c_is_130_and_sigterm_0_without_a_traceback(agents, engine):
    """Ctrl-C used to exit 0 like SIGTERM (and, early in a load, print the closed event loop's traceback).
    The paged tiny model is signalled right after the agent listens, often still loading."""
    for sig, status in ((signal.SIGINT, 130), (signal.SIGTERM, 0)):
        agent = agents(*engine)
        if engine[1] == "simulated":
            agent.wait_serving()
        agent.proc.send_signal(sig)
        assert agent.proc.wait(60) == status, agent.stderr()
        assert "Traceback" not in agent.stderr(), agent.stderr()
