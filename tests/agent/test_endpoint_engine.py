"""The openai engine against a small real HTTP server (tests/openai_servers.py) that streams completions
in the OpenAI format: the request it sends, the token ids it reads back, stop ids, refusals, the load
it reports from the server's metrics, and holding then resuming queries when the server goes away."""
from __future__ import annotations

import time

import pytest

from llmbench.agent.engine.factory import create_engine
from llmbench.agent.engine.in_process import generate
from llmbench.agent.engine.openai_load import backend_load
from llmbench.agent.engine.openai_wire import NoTokenIds, parse_chunk
from llmbench.agent.engine.types import EngineConfig, ErrorCode, FinishReason, Request
from openai_servers import SmallServer, next_token


def expected(prompt: list[int], n: int) -> list[int]:
    context = list(prompt)
    for _ in range(n):
        context.append(next_token(context))
    return context[len(prompt):]


@pytest.fixture
def server():
    s = SmallServer()
    yield s
    s.close()


def started(url: str, **kw):
    engine = create_engine(EngineConfig(engine="openai", url=url, **kw))
    engine.start()
    return engine


def test_completions_map_to_token_ids(server):
    engine = started(server.url, max_batch=2)
    try:
        assert (engine.info.name, engine.info.max_context, engine.info.engine) == ("small", 512, "openai")
        assert engine.ids_via == "token_ids"
        assert engine.num_blocks == 64  # vllm:cache_config_info: 64 blocks of 16
        reqs = [Request(i, [5 + i, 7, 9], 6 + i, min_new_tokens=2, ignore_eos=True) for i in range(3)]
        done = generate(engine, reqs, timeout=60)
        for r in reqs:
            assert done[r.id].tokens == expected(r.prompt, r.max_new_tokens)
            assert done[r.id].finish == FinishReason.LENGTH
        body = server.requests[-1]
        assert body["stream"] is True and body["temperature"] == 0.0 and body["return_token_ids"] is True
        assert body["model"] == "small" and body["ignore_eos"] is True and body["min_tokens"] == 2
        assert sorted(len(b["prompt"]) for b in server.requests[1:]) == [3, 3, 3]  # [0]: the warm-up
        s = engine.stats()
        assert (s.output_tokens_total, s.prompt_tokens_total, s.queries_finished_total) == (21, 9, 3)
        # the server says a quarter of its KV is in use (vllm:kv_cache_usage_perc 0.25)
        assert s.kv_blocks_free == 48 and s.unavailable == ""
    finally:
        engine.stop()


def test_stop_ids_end_a_query_here(server):
    engine = started(server.url)
    try:
        prompt = [11, 12]
        full = expected(prompt, 20)
        stop = full[4]
        done = generate(engine, [Request(0, prompt, 20, stop_ids=(stop,))], timeout=60)
        assert done[0].tokens == full[:full.index(stop) + 1] and done[0].finish == FinishReason.STOP
        assert server.requests[-1]["stop_token_ids"] == [stop]
    finally:
        engine.stop()


def test_a_refused_query_is_invalid(server):
    engine = started(server.url)
    try:
        done = generate(engine, [Request(0, [5000], 4)], timeout=60)  # the small server's vocabulary is 1000
        code, message = done[0].error
        assert code == ErrorCode.INVALID_QUERY and "HTTP 400" in message
    finally:
        engine.stop()


def test_a_server_without_token_ids_is_refused_at_start():
    server = SmallServer(text_only=True)
    try:
        engine = create_engine(EngineConfig(engine="openai", url=server.url))
        with pytest.raises(ValueError, match="without token ids; llmbench does not re-tokenize"):
            engine.start()
    finally:
        server.close()
    with pytest.raises(NoTokenIds):
        parse_chunk('{"choices": [{"text": "hi", "finish_reason": null}]}')


def test_held_while_the_server_is_down_then_resumed():
    server = SmallServer(token_delay_s=0.05)
    engine = started(server.url)
    port = server.port
    try:
        results: dict = {}
        prompt = [3, 4, 5]
        engine.submit([Request(0, prompt, 40, ignore_eos=True)],
                      lambda out: results.setdefault("tokens", []).extend(out.tokens)
                      or results.update(finished=out.finished or results.get("finished")))
        deadline = time.monotonic() + 30
        while len(results.get("tokens", [])) < 5:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        server.close()  # mid-query: the stream breaks
        while not engine.stats().unavailable:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        s = engine.stats()
        assert s.waiting == 1 and s.kv_blocks_free == 0 and s.step_running_s == 0.0
        server = SmallServer(token_delay_s=0.0, port=port)  # back: the query resumes where it stopped
        while not results.get("finished"):
            assert time.monotonic() < deadline, engine.stats()
            time.sleep(0.05)
        assert results["tokens"] == expected(prompt, 40)
        resumed = server.requests[-1]
        assert resumed["prompt"][:3] == prompt and resumed["max_tokens"] == 43 - len(resumed["prompt"])
        assert engine.stats().unavailable == ""
    finally:
        engine.stop()
        server.close()


def test_metrics_of_each_stack():
    vllm = backend_load('vllm:kv_cache_usage_perc{engine="0"} 0.5\nvllm:num_requests_running 3\n'
                        'vllm:num_requests_waiting 2\n')
    assert (vllm.kv_used, vllm.running, vllm.waiting) == (0.5, 3, 2)
    sglang = backend_load("sglang:token_usage 0.1\nsglang:max_total_num_tokens 1000\nsglang:num_queue_reqs 4\n")
    assert (sglang.kv_used, sglang.kv_tokens, sglang.waiting) == (0.1, 1000, 4)
    llama = backend_load("# HELP x\nllamacpp:kv_cache_usage_ratio 0.75\nllamacpp:requests_processing 1\n")
    assert (llama.kv_used, llama.running, llama.kv_tokens) == (0.75, 1, None)
    assert backend_load("garbage line\n") == backend_load("")


@pytest.mark.parametrize("url", ["localhost:8000", "ftp://x/v1", "http://h:notaport/v1"])
def test_bad_urls(url):
    with pytest.raises(ValueError, match="--url"):
        create_engine(EngineConfig(engine="openai", url=url))


def test_api_key_file(tmp_path):
    with pytest.raises(ValueError, match="--api-key-file"):
        create_engine(EngineConfig(engine="openai", url="http://127.0.0.1:1/v1", api_key_file=str(tmp_path / "no")))
    key = tmp_path / "key"
    key.write_text("sekret\n")
    engine = create_engine(EngineConfig(engine="openai", url="http://127.0.0.1:1/v1", api_key_file=str(key)))
    assert engine.backend.headers["Authorization"] == "Bearer sekret"
