"""Hostile input with known answers on a real agent process: oversized messages, prompts and
max_new_tokens far beyond any limit, token ids out of range, and bytes that are not gRPC at all.
The agent answers each with a clear status or per-query error, allocates nothing for what it refuses,
and keeps serving."""
from __future__ import annotations

import os
import queue
import socket
import threading
import time

import grpc
import psutil
import pytest

from llmbench.agent.engine.simulated import MAX_CONTEXT, VOCAB_SIZE
from llmbench.proto import MAX_REQUEST_BYTES, pb, rpc

from mesh_processes import Agent


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    a = Agent(tmp_path_factory.mktemp("agent"), tokens_per_s=1e6)
    yield a
    a.stop()


def serve(stub, *queries: pb.Query) -> dict[int, tuple[int, str]]:
    """One Serve stream, open until every query (each must be refused) got its error; errors by id."""
    requests: queue.Queue = queue.Queue()
    requests.put(pb.ServeRequest(submit=pb.QueryBatch(queries=queries)))
    call = stub.Serve(iter(requests.get, None), timeout=30)
    errors = {}
    while len(errors) < len(queries):
        step = next(call)
        assert not step.ids, "a refused query produced tokens"
        errors.update((e.id, (e.code, e.message)) for e in step.errors)
    requests.put(None)
    assert list(call) == []
    return errors


def still_serves(address: str) -> None:
    with grpc.insecure_channel(address) as channel:
        replies = rpc.AgentStub(channel).Generate(pb.GenerateRequest(tokens=pb.TokenList(ids=[1, 2]),
                                                                     max_new_tokens=3, ignore_eos=True), timeout=10)
        assert sum(len(r.tokens) for r in replies) == 3


HEALTH_CHECK = "/grpc.health.v1.Health/Check"  # open to all, token or not (probes have none)


def rss(agent: Agent) -> int:
    return psutil.Process(agent.proc.pid).memory_info().rss


def test_oversized_messages_are_refused_unread(agent):
    body = b"\x00" * (MAX_REQUEST_BYTES + 1)
    options = [("grpc.max_send_message_length", -1)]
    with grpc.insecure_channel(agent.address, options=options) as channel:
        for call in (lambda: list(channel.unary_stream("/llmbench.v1.Agent/Generate")(body, timeout=30)),
                     lambda: list(channel.stream_stream("/llmbench.v1.Agent/Serve")(iter([body]), timeout=30)),
                     lambda: channel.unary_unary(HEALTH_CHECK)(body, timeout=30)):
            with pytest.raises(grpc.RpcError) as err:
                call()
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "larger than max" in err.value.details()
    still_serves(agent.address)


def test_absurd_sizes_get_per_query_errors_without_allocation(agent):
    with grpc.insecure_channel(agent.address) as channel:
        stub = rpc.AgentStub(channel)
        serve(stub, pb.Query(id=0, prompt_tokens=[1], max_new_tokens=2**31 - 1))  # warm: first-call allocations
        before = rss(agent)
        start = time.monotonic()
        huge = pb.Query(id=1, prompt_tokens=[1000] * 1_000_000, max_new_tokens=1)  # 2 MB wire
        errors = serve(stub, huge, *[pb.Query(id=i, prompt_tokens=[1, 2], max_new_tokens=2**31 - 1)
                                     for i in range(2, 1002)])
        assert errors[1] == (pb.ERROR_CODE_TOO_LONG,
                             f"prompt of 1000000 tokens exceeds the context of {MAX_CONTEXT} tokens")
        assert all(errors[i][0] == pb.ERROR_CODE_TOO_LONG and "2147483647" in errors[i][1] for i in range(2, 1002))
        many_stops = serve(stub, pb.Query(id=7, prompt_tokens=[1], max_new_tokens=1, stop_token_ids=range(10_000)))
        assert many_stops[7] == (pb.ERROR_CODE_INVALID_QUERY, "10000 stop token ids; at most 256 are allowed")
        for request, code in ((pb.GenerateRequest(tokens=pb.TokenList(ids=[1]), max_new_tokens=2**31 - 1),
                               grpc.StatusCode.OUT_OF_RANGE),
                              (pb.GenerateRequest(tokens=pb.TokenList(ids=[1000] * 1_000_000)), grpc.StatusCode.OUT_OF_RANGE),
                              (pb.GenerateRequest(tokens=pb.TokenList(ids=[1]), max_new_tokens=-5),
                               grpc.StatusCode.INVALID_ARGUMENT)):
            with pytest.raises(grpc.RpcError) as err:
                list(stub.Generate(request, timeout=30))
            assert err.value.code() == code, err.value
        elapsed = time.monotonic() - start
        grown = rss(agent) - before
    print(f"absurd sizes refused in {elapsed:.2f} s; agent RSS grew {grown / 2**20:.0f} MiB")
    assert grown < 24 * 2**20  # copied to a Python list, the 1M-token prompt alone is 36 MB
    still_serves(agent.address)


def test_token_ids_out_of_range(agent):
    with grpc.insecure_channel(agent.address) as channel:
        errors = serve(rpc.AgentStub(channel),
                       pb.Query(id=1, prompt_tokens=[1, -1], max_new_tokens=2),
                       pb.Query(id=2, prompt_tokens=[VOCAB_SIZE], max_new_tokens=2),
                       pb.Query(id=3, prompt_tokens=[5, 6, 2**31 - 1], max_new_tokens=2),
                       pb.Query(id=4, prompt_tokens=[5], max_new_tokens=2, stop_token_ids=[-7]))
    assert errors[1] == (pb.ERROR_CODE_INVALID_QUERY,
                         f"prompt token -1 at position 1 is outside the vocabulary 0..{VOCAB_SIZE - 1}")
    assert errors[2][0] == errors[3][0] == errors[4][0] == pb.ERROR_CODE_INVALID_QUERY
    assert f"token {VOCAB_SIZE} at position 0" in errors[2][1] and "2147483647 at position 2" in errors[3][1]
    assert "stop ids [-7]" in errors[4][1]


@pytest.mark.parametrize("junk", [os.urandom(4096), b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
                                  b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + os.urandom(512), b"PRI * HTTP/2.0\r\n"])
def test_bytes_that_are_not_grpc(agent, junk):
    host, port = agent.address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(junk)
        s.shutdown(socket.SHUT_WR)
        while s.recv(65536):  # the agent answers (GOAWAY, or nothing) and closes
            pass
    assert agent.proc.poll() is None
    still_serves(agent.address)


def refused_concurrently(agent: Agent, method: str, body: bytes) -> tuple[list, int]:
    """16 concurrent calls of `body` to `method`, twice: their status codes, and how much the agent grew."""
    before = rss(agent)
    codes: list = []

    def one() -> None:
        with grpc.insecure_channel(agent.address, options=[("grpc.max_send_message_length", -1)]) as channel:
            try:
                call = channel.unary_stream(method) if method.endswith("/Generate") else channel.unary_unary(method)
                reply = call(body, timeout=60)
                list(reply) if method.endswith("/Generate") else reply
            except grpc.RpcError as exc:
                codes.append(exc.code())
    for _ in range(2):
        threads = [threading.Thread(target=one) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    grown = rss(agent) - before
    print(f"agent RSS grew {grown >> 20} MiB over 32 refused {len(body) >> 20} MiB bodies to {method}")
    return codes, grown


def test_bodies_sent_without_the_token_are_never_taken_in(tmp_path):
    """Generate bodies without the token are refused unread (1.3 GB grown when refusals read the body first)."""
    token_file = tmp_path / "token"
    token_file.write_text("s3cret\n")
    protected = Agent(tmp_path, tokens_per_s=1e6, args=("--auth-token-file", str(token_file)))
    try:
        codes, grown = refused_concurrently(protected, "/llmbench.v1.Agent/Generate",
                                            pb.GenerateRequest(text="x" * (3 << 20)).SerializeToString())
        assert codes == [grpc.StatusCode.UNAUTHENTICATED] * 32
        assert grown < 32 << 20, f"{grown >> 20} MiB"
    finally:
        protected.stop()


def test_bodies_past_the_request_limit_cost_nothing_even_where_no_token_is_asked(agent):
    """The health Check is open to anyone: a 60 MiB body is refused from its length prefix, unread (at a
    64 MiB limit, 32 of them grew the agent 641 MiB)."""
    codes, grown = refused_concurrently(agent, HEALTH_CHECK, b"\x0a" + b"\xff" * (60 << 20))
    assert codes == [grpc.StatusCode.RESOURCE_EXHAUSTED] * 32
    assert grown < 32 << 20, f"{grown >> 20} MiB"
    still_serves(agent.address)
