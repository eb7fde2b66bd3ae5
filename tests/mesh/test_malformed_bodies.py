"""Bodies that are not the message they claim to be, to every service of a real agent process and of the
coordinator's status server: INVALID_ARGUMENT naming the message, unary or streamed, one short log line
(at most one per 10 s, the rest counted), no traceback, and the server keeps serving."""
from __future__ import annotations

import logging

import grpc
import pytest

from llmbench.common import malformed
from llmbench.coordinator.observe.metrics import RunMetrics
from llmbench.coordinator.observe.status_service import StatusServer
from llmbench.proto import pb, rpc

from mesh_processes import Agent

JUNK = b"\xff\xff\xff not protobuf"
REFLECTION = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"


def refused(channel: grpc.Channel, method: str, streamed_requests: bool) -> grpc.RpcError:
    call = (channel.stream_stream(method)(iter([JUNK]), timeout=10) if streamed_requests
            else channel.unary_stream(method)(JUNK, timeout=10))
    with pytest.raises(grpc.RpcError) as err:
        list(call)
    return err.value


def test_an_agent_refuses_junk_on_every_service_with_one_line(tmp_path):
    agent = Agent(tmp_path, tokens_per_s=1e5)
    try:
        with grpc.insecure_channel(agent.address) as channel:
            for method, streamed, message in ((REFLECTION, True, "ServerReflectionRequest"),
                                              ("/llmbench.v1.Agent/Serve", True, "ServeRequest"),
                                              ("/llmbench.v1.Agent/Generate", False, "GenerateRequest")):
                for _ in range(3):
                    e = refused(channel, method, streamed)
                    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and message in e.details(), (method, e)
            replies = rpc.AgentStub(channel).Generate(pb.GenerateRequest(tokens=pb.TokenList(ids=[1, 2]),
                                                                         max_new_tokens=3, ignore_eos=True), timeout=10)
            assert sum(len(r.tokens) for r in replies) == 3  # still serving
    finally:
        agent.stop()
    log = agent.log_path.read_text()
    assert "Traceback" not in log and "Abort already called" not in log, log
    lines = [line for line in log.splitlines() if "refused /" in line]
    assert len(lines) == 1 and "malformed request" in lines[0], lines  # 9 bad bodies within 10 s: one line


def test_the_status_server_refuses_junk_and_counts_what_it_did_not_log(caplog, monkeypatch):
    monkeypatch.setattr(malformed, "_THROTTLE", malformed._Throttle())
    server = StatusServer(RunMetrics(), "127.0.0.1", 0)
    address = f"127.0.0.1:{server.start()}"
    try:
        with caplog.at_level(logging.WARNING), grpc.insecure_channel(address) as channel:
            for method, streamed, message in ((REFLECTION, True, "ServerReflectionRequest"),
                                              ("/llmbench.v1.Coordinator/WatchRun", False, "WatchRunRequest")):
                e = refused(channel, method, streamed)
                assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and message in e.details(), (method, e)
            monkeypatch.setattr(malformed, "LOG_EVERY_S", 0.0)  # the next line comes at once, with the count
            refused(channel, REFLECTION, True)
            status = next(iter(rpc.CoordinatorStub(channel).WatchRun(pb.WatchRunRequest(), timeout=10)))
            assert status.elapsed_s >= 0
    finally:
        server.stop(0.5)
    lines = [r.getMessage() for r in caplog.records if "refused /" in r.getMessage()]
    assert len(lines) == 2 and "(1 more since the last such line)" in lines[1], lines
    assert not any(r.exc_info for r in caplog.records)
