"""Hostile input on a real agent process's port, from hypothesis: over 10,000 random requests (queries in
Serve batches, GenerateRequests, raw bytes as request bodies). Each one must get the answer an oracle
of the wire contract predicts (a finish with the right token count, a per-query error code, or a clear
gRPC status), while a well-behaved client keeps being served correctly and the agent never crashes
nor logs a traceback."""
from __future__ import annotations

import queue
import threading
from collections import Counter

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings, strategies as st

from llmbench.agent.engine.in_process import generate
from llmbench.agent.server.screening import MAX_STOP_IDS
from llmbench.agent.engine.simulated import MAX_CONTEXT, VOCAB_SIZE, SimulatedEngine
from llmbench.agent.engine.types import EngineConfig, Request, token_runs
from llmbench.proto import pb, rpc

from mesh_processes import Agent

INT32 = st.integers(-2**31, 2**31 - 1)
EDGES = [-2**31, -1, 0, 1, VOCAB_SIZE - 1, VOCAB_SIZE, 2**31 - 1]
TOKEN = st.one_of(st.integers(0, VOCAB_SIZE - 1), INT32, st.sampled_from(EDGES))
# Valid outputs stay short (one message per engine step), so a valid query never asks for 17..max_context.
MAX_NEW = st.one_of(st.integers(1, 16), st.sampled_from([0, -1, -2**31, 2**31 - 1, MAX_CONTEXT]),
                    INT32.filter(lambda v: v <= 16 or v > MAX_CONTEXT))
STOP_IDS = st.one_of(st.lists(st.integers(0, VOCAB_SIZE - 1), max_size=3), st.lists(TOKEN, max_size=3),
                     st.just(list(range(MAX_STOP_IDS + 1))))
QUERY = st.builds(pb.Query, id=st.one_of(st.integers(0, 3), st.integers(0, 2**64 - 1)),
                  prompt_tokens=st.one_of(st.lists(st.integers(0, VOCAB_SIZE - 1), min_size=1, max_size=12),
                                          st.lists(TOKEN, max_size=12)),
                  max_new_tokens=MAX_NEW, min_new_tokens=st.one_of(st.integers(0, 20), INT32),
                  stop_token_ids=STOP_IDS, ignore_eos=st.booleans())
RUN, INVALID, TOO_LONG, DUPLICATE = "run", pb.ERROR_CODE_INVALID_QUERY, pb.ERROR_CODE_TOO_LONG, pb.ERROR_CODE_DUPLICATE_ID
GRPC_CODE = {INVALID: grpc.StatusCode.INVALID_ARGUMENT, TOO_LONG: grpc.StatusCode.OUT_OF_RANGE}
OK_STATUSES = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.OUT_OF_RANGE}  # for bodies of unknown meaning


def oracle(q: pb.Query, admitted: set[int]) -> object:
    """What the contract says happens to q in a batch whose earlier queries admitted `admitted` ids."""
    if q.id in admitted:
        return DUPLICATE
    n = len(q.prompt_tokens)
    if n > MAX_CONTEXT:
        return TOO_LONG
    if len(q.stop_token_ids) > MAX_STOP_IDS:
        return INVALID
    admitted.add(q.id)
    vocab = range(VOCAB_SIZE)
    if n == 0 or any(t not in vocab for t in q.prompt_tokens) or any(t not in vocab for t in q.stop_token_ids):
        return INVALID
    if q.max_new_tokens <= 0 or q.min_new_tokens < 0:
        return INVALID
    return TOO_LONG if n + q.max_new_tokens > MAX_CONTEXT else RUN


class Outcomes:
    """Every message of one Serve stream, folded per query id."""

    def __init__(self) -> None:
        self.tokens: dict[int, list[int]] = {}
        self.finishes: dict[int, list[int]] = {}
        self.errors: dict[int, list[tuple[int, str]]] = {}
        self.ended = 0

    def add(self, r: pb.StepResult) -> None:
        for qid, tokens in token_runs(r):
            self.tokens.setdefault(qid, []).extend(tokens)
        assert sum(r.counts) == len(r.tokens)
        for qid, reason in zip(r.finished_ids, r.finish_reasons):
            self.finishes.setdefault(qid, []).append(reason)
        for e in r.errors:
            assert e.message, "an error without a message"
            self.errors.setdefault(e.id, []).append((e.code, e.message))
        self.ended += len(r.finished_ids) + len(r.errors)


def check_serve(stub, batch: list[pb.Query], cancel: list[int], junk_tail: bool, counts: Counter) -> None:
    admitted: set[int] = set()
    expected = [(q, oracle(q, admitted)) for q in batch]
    VERDICTS.update(str(code) for _, code in expected)
    requests: queue.Queue = queue.Queue()
    requests.put(pb.ServeRequest(submit=pb.QueryBatch(queries=batch)))
    if cancel:
        requests.put(pb.ServeRequest(cancel=pb.Cancel(ids=cancel)))
    if junk_tail:
        requests.put(pb.ServeRequest())  # neither submit nor cancel: the stream is refused
    call = stub.Serve(iter(requests.get, None), timeout=30)
    seen = Outcomes()
    counts["queries"] += len(batch)
    try:
        while seen.ended < len(batch):
            seen.add(next(call))
    except grpc.RpcError as err:
        assert junk_tail and err.code() == grpc.StatusCode.INVALID_ARGUMENT, err
        assert "neither submit nor cancel" in err.details()
        return
    requests.put(None)
    try:
        assert list(call) == [] and not junk_tail
    except grpc.RpcError as err:  # the junk came after every query had ended
        assert junk_tail and err.code() == grpc.StatusCode.INVALID_ARGUMENT, err
    want_errors = Counter((q.id, code) for q, code in expected if code != RUN)
    got_errors = Counter((qid, code) for qid, errs in seen.errors.items() for code, _ in errs)
    assert got_errors == want_errors, (got_errors, want_errors)
    for q, code in expected:
        if code != RUN:
            continue
        (reason,) = seen.finishes[q.id]
        tokens = seen.tokens.get(q.id, [])
        assert all(0 <= t < VOCAB_SIZE for t in tokens)
        if reason == pb.FINISH_REASON_LENGTH:
            assert len(tokens) == q.max_new_tokens
        elif reason == pb.FINISH_REASON_STOP:
            assert not q.ignore_eos and tokens[-1] in q.stop_token_ids and len(tokens) >= q.min_new_tokens
        else:
            assert reason == pb.FINISH_REASON_CANCELLED and q.id in cancel and len(tokens) <= q.max_new_tokens
    assert set(seen.finishes) == {q.id for q, code in expected if code == RUN}


GENERATE = st.builds(pb.GenerateRequest, text=st.one_of(st.none(), st.text(max_size=20)),
                     tokens=st.one_of(st.none(), st.builds(pb.TokenList, ids=st.lists(TOKEN, max_size=12))),
                     max_new_tokens=MAX_NEW | st.just(0), min_new_tokens=st.integers(0, 4) | INT32,
                     stop_token_ids=STOP_IDS, ignore_eos=st.booleans())


def check_generate(stub, request: pb.GenerateRequest, counts: Counter) -> None:
    counts["generate"] += 1
    kind = request.WhichOneof("prompt")
    if kind != "tokens":
        want: object = grpc.StatusCode.INVALID_ARGUMENT  # no prompt, or text to an agent without a tokenizer
    else:
        q = pb.Query(prompt_tokens=request.tokens.ids, max_new_tokens=request.max_new_tokens or 128,
                     min_new_tokens=request.min_new_tokens, stop_token_ids=request.stop_token_ids)
        verdict = oracle(q, set())
        want = RUN if verdict == RUN else GRPC_CODE[verdict]
    try:
        replies = list(stub.Generate(request, timeout=30))
    except grpc.RpcError as err:
        assert err.code() == want and err.details(), (request, err)
        return
    assert want == RUN, (request, want)
    tokens = [t for r in replies for t in r.tokens]
    assert replies[-1].finish_reason in (pb.FINISH_REASON_LENGTH, pb.FINISH_REASON_STOP)
    assert len(tokens) <= (request.max_new_tokens or 128)


def check_raw(channel: grpc.Channel, method: str, body: bytes, counts: Counter) -> None:
    """Bytes that may or may not parse as the method's request: a clear status or a normal answer."""
    counts["raw"] += 1
    path = f"/llmbench.v1.Agent/{method}"
    try:
        if method == "Serve":  # the request side closes after the body: whatever runs is cancelled
            list(channel.stream_stream(path)(iter([body]), timeout=30))
        elif method == "WatchStatus":
            call = channel.unary_stream(path)(body, timeout=30)
            next(call)
            call.cancel()
        else:
            list(channel.unary_stream(path)(body, timeout=30))
    except grpc.RpcError as err:
        assert err.code() in OK_STATUSES | ({grpc.StatusCode.CANCELLED} if method == "WatchStatus" else set()), err
        assert err.details()


SERVE_CASE = st.tuples(st.lists(QUERY, min_size=12, max_size=64), st.lists(st.integers(0, 3), max_size=2),
                       st.sampled_from([False] * 19 + [True]))
RAW_CASE = st.tuples(st.sampled_from(["Generate", "Serve", "WatchStatus"]), st.binary(max_size=64))
VERDICTS: Counter = Counter()  # oracle verdicts over every fuzzed query, to show what was covered
FUZZ = settings(deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck))


class ValidClient(threading.Thread):
    """Generates the same prompt again and again during the fuzzing; every answer must be exact."""

    def __init__(self, address: str) -> None:
        super().__init__(daemon=True)
        self.address = address
        engine = SimulatedEngine(EngineConfig(engine="simulated", tokens_per_s=1e6))
        engine.start()
        self.expected = generate(engine, [Request(0, [128000, 791, 2115], 16, ignore_eos=True)])[0].tokens
        engine.stop()
        self.stop = threading.Event()
        self.served = 0
        self.failures: list[str] = []

    def run(self) -> None:
        with grpc.insecure_channel(self.address) as channel:
            stub = rpc.AgentStub(channel)
            while not self.stop.is_set():
                try:
                    replies = stub.Generate(pb.GenerateRequest(tokens=pb.TokenList(ids=[128000, 791, 2115]),
                                                               max_new_tokens=16, ignore_eos=True), timeout=30)
                    got = [t for r in replies for t in r.tokens]
                except grpc.RpcError as err:
                    got = [f"{err.code()}: {err.details()}"]
                if got == self.expected:
                    self.served += 1
                else:
                    self.failures.append(str(got))


@pytest.mark.slow
def test_fuzz_agent_with_10000_random_requests(tmp_path):
    agent = Agent(tmp_path, tokens_per_s=5e6, args=("--max-batch", "64"))
    client = ValidClient(agent.address)
    counts: Counter = Counter()
    try:
        client.start()
        with grpc.insecure_channel(agent.address) as channel:
            stub = rpc.AgentStub(channel)

            @settings(FUZZ, max_examples=550)
            @given(SERVE_CASE)
            def fuzz_serve(case) -> None:
                check_serve(stub, *case, counts)

            @settings(FUZZ, max_examples=1500)
            @given(GENERATE)
            def fuzz_generate(request) -> None:
                check_generate(stub, request, counts)

            @settings(FUZZ, max_examples=1500)
            @given(RAW_CASE)
            def fuzz_raw(case) -> None:
                check_raw(channel, *case, counts)
            for fuzz in (fuzz_serve, fuzz_generate, fuzz_raw):
                fuzz()
            health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        client.stop.set()
        client.join(30)
        assert agent.proc.poll() is None, "the agent died"
        assert health.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        client.stop.set()
        agent.stop()
    total = sum(counts.values())
    print(f"fuzz: {total} requests ({dict(counts)}); the valid client was served {client.served} times meanwhile")
    print(f"query verdicts: {dict(VERDICTS)}")
    assert total >= 10_000
    assert set(VERDICTS) == {str(v) for v in (RUN, INVALID, TOO_LONG, DUPLICATE)}
    assert not client.failures and client.served >= 20, client.failures[:3]
    log = agent.log_path.read_text()
    assert "Traceback" not in log and " E " not in log, log[-3000:]
