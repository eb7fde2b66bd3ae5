"""`llmbench generate`: JSONL prompts in, JSONL outputs out (in input order), in-process or via an agent."""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import dataclass, field, replace
from typing import IO, Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from llmbench.agent.commands.agent import add_engine_arguments, above, at_least, check_flags, engine_config, given_engine_flags
from llmbench.agent.engine.factory import create_engine
from llmbench.agent.model.loader import resolve_source
from llmbench.agent.engine.in_process import generate
from llmbench.agent.model.tokenizer import decode, encode, load_tokenizer
from llmbench.agent.engine.types import EngineConfig, FinishReason, Request, StepOutput, token_runs
from llmbench.common.auth import ClientSecurity, add_client_arguments, client_security
from llmbench.common.kv import kv_blocks
from llmbench.common.ports import split_host_port
from llmbench.proto import pb, rpc

SUBMIT_CHUNK = 256  # queries per Serve message, to stay far below the message size limit
READY_TIMEOUT_S = 600.0  # an agent that answers but is still loading its model


@dataclass
class Prompt:
    line: int
    id: Any
    tokens: list[int] | None
    text: str | None


@dataclass
class Result:
    tokens: list[int] = field(default_factory=list)
    finish_reason: str | None = None
    text: str | None = None
    error: str | None = None


DESCRIPTION = """\
generate from JSONL prompts, in-process or via an agent

input (--input FILE or stdin), one JSON object per line, ids unique:
  {"id": ID, "tokens": [token ids...]}   or   {"id": ID, "text": "..."} (needs a tokenizer)
  (ID: any JSON value; the line number when left out)
output (stdout), one line per prompt, in input order:
  {"id": ID, "tokens": [...], "text": "..." (with a tokenizer), "finish_reason": "length"|"eos"|"stop"}
  {"id": ID, "error": "..."} for a prompt the engine refused (the command then exits 2)
"""
RULES = {"max_new_tokens": at_least(1), "connect_timeout": above(0)}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = DESCRIPTION
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    add_engine_arguments(p)
    p.add_argument("--agent", metavar="HOST:PORT",
                   help="generate on a running agent instead of in-process (the engine flags above then do not apply)")
    p.add_argument("--input", metavar="FILE", help="JSONL prompts (default: stdin)")
    p.add_argument("--max-new-tokens", type=int, default=128, help="(default: %(default)s)")
    p.add_argument("--ignore-eos", action="store_true", help="always generate --max-new-tokens tokens")
    p.add_argument("--connect-timeout", type=float, default=5.0,
                   help="seconds to wait for --agent to answer (default: %(default)g)")
    add_client_arguments(p)


def run(args: argparse.Namespace) -> int:
    if args.agent:
        check_flags(args, RULES)
        split_host_port(args.agent, args.agent)
        engine_flags = given_engine_flags(args)
        if engine_flags:
            raise ValueError(f"{', '.join(engine_flags)}: engine flags apply in-process only; with --agent the "
                             "agent's own engine settings are used")
    cfg = None if args.agent else engine_config(args, RULES)
    prompts = _read_input(args.input)
    if args.agent:
        results = asyncio.run(generate_remote(args.agent, prompts, args.max_new_tokens, args.ignore_eos,
                                              args.connect_timeout, client_security(args)))
    else:
        results = generate_local(cfg, prompts, args.max_new_tokens, args.ignore_eos)
    for p, r in zip(prompts, results):
        row = {"id": p.id, "error": r.error} if r.error else \
            {"id": p.id, "tokens": r.tokens, **({"text": r.text} if r.text is not None else {}),
             "finish_reason": r.finish_reason}
        sys.stdout.write(json.dumps(row) + "\n")
    sys.stdout.flush()
    failed = [(p, r) for p, r in zip(prompts, results) if r.error]
    if failed:
        p, r = failed[0]
        raise ValueError(f"{len(failed)} of {len(prompts)} prompts failed; first: line {p.line}: {r.error}")
    return 0


def _read_input(path: str | None) -> list[Prompt]:
    if path is None:
        return read_prompts(sys.stdin)
    try:
        with open(path, encoding="utf-8") as f:
            return read_prompts(f)
    except OSError as exc:
        raise ValueError(f"cannot read --input {path}: {exc.strerror}") from None


def read_prompts(stream: IO[str]) -> list[Prompt]:
    prompts = []
    for n, raw in enumerate(stream, 1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ValueError(f"line {n}: not valid JSON ({exc.msg})") from None
        if not isinstance(obj, dict):
            raise ValueError(f'line {n}: expected an object like {{"id": 1, "tokens": [...]}}')
        tokens, text = obj.get("tokens"), obj.get("text")
        if (tokens is None) == (text is None):
            raise ValueError(f'line {n}: needs exactly one of "tokens" (a list of ids) or "text"')
        if tokens is not None and not (isinstance(tokens, list) and
                                       all(isinstance(t, int) and not isinstance(t, bool) for t in tokens)):
            raise ValueError(f'line {n}: "tokens" must be a list of integers')
        if text is not None and not isinstance(text, str):
            raise ValueError(f'line {n}: "text" must be a string')
        prompts.append(Prompt(n, obj.get("id", n), tokens, text))
    if not prompts:
        raise ValueError("no prompts in the input (expected JSONL lines)")
    first_line: dict[str, int] = {}
    for p in prompts:
        key = json.dumps(p.id, sort_keys=True)
        if key in first_line:
            raise ValueError(f"line {p.line}: id {key} repeats the id of line {first_line[key]}; ids must be unique")
        first_line[key] = p.line
    return prompts


def _apply(out: StepOutput, results: list[Result]) -> int:
    """Fold one step into the results; returns how many queries ended in it."""
    for qid, tokens in token_runs(out):
        results[qid].tokens.extend(tokens)
    for qid, reason in out.finished:
        results[qid].finish_reason = FinishReason(reason).name.lower()
    for qid, _, message in out.errors:
        results[qid].error = message
    return len(out.finished) + len(out.errors)


def generate_local(cfg: EngineConfig, prompts: list[Prompt], max_new_tokens: int, ignore_eos: bool) -> list[Result]:
    source = resolve_source(cfg.model) if cfg.engine == "paged" else None
    tokenizer = load_tokenizer(str(source.path) if source and source.path else None)
    requests = []
    for i, p in enumerate(prompts):
        if p.text is not None and tokenizer is None:
            raise ValueError(f"line {p.line}: a text prompt, but model {cfg.model} has no tokenizer; send token ids")
        tokens = p.tokens if p.text is None else encode(tokenizer, p.text)
        requests.append(Request(i, tokens, max_new_tokens, ignore_eos=ignore_eos))
    # The job is known: a KV cache and a batch for these prompts, not for a server's worth of queries.
    need = sum(kv_blocks(len(r.prompt), max_new_tokens, cfg.block_size) for r in requests)
    cfg = replace(cfg, max_kv_blocks=cfg.max_kv_blocks or max(need, 1), max_batch=min(cfg.max_batch, max(len(requests), 1)))
    engine = create_engine(cfg)
    engine.start()
    try:
        done = generate(engine, requests)
    finally:
        engine.stop()
    results = [Result(g.tokens, g.finish.name.lower() if g.finish is not None else None,
                      error=g.error[1] if g.error else None) for g in (done[i] for i in range(len(prompts)))]
    if tokenizer is not None:
        for r in results:
            r.text = None if r.error else decode(tokenizer, r.tokens)
    return results


async def generate_remote(address: str, prompts: list[Prompt], max_new_tokens: int, ignore_eos: bool,
                          connect_timeout: float, security: ClientSecurity | None = None) -> list[Result]:
    results = [Result() for _ in prompts]
    security = security or ClientSecurity()
    metadata = security.metadata
    async with security.aio_channel(address) as channel:
        try:
            await asyncio.wait_for(channel.channel_ready(), connect_timeout)
        except asyncio.TimeoutError:
            handshake = await _handshake_failure(channel, security)
            raise ConnectionError(f"agent {address}: {handshake}" if handshake else
                                  f"agent {address} does not answer (no connection within {connect_timeout:g} s)") from None
        stub = rpc.AgentStub(channel)
        try:
            await _wait_serving(channel, address)
            await _check_access(stub, metadata)
            by_tokens = [i for i, p in enumerate(prompts) if p.tokens is not None]
            texts = [_generate_text(stub, i, prompts[i].text, max_new_tokens, ignore_eos, results, metadata)
                     for i, p in enumerate(prompts) if p.text is not None]
            await asyncio.gather(_serve_tokens(stub, prompts, by_tokens, max_new_tokens, ignore_eos, results, metadata),
                                 *texts)
        except grpc.aio.AioRpcError as exc:
            details = exc.details() or ""
            raise ConnectionError(f"agent {address}: " + (security.handshake_failure(details) or
                                  f"{exc.code().name}: {details}{security.closed_hint(details)}")) from None
    return results


async def _handshake_failure(channel: grpc.aio.Channel, security: ClientSecurity) -> str | None:
    """After a connection that never came: the TLS mismatch behind it, if one more attempt's failure names one."""
    try:
        await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)
    except grpc.aio.AioRpcError as exc:
        return security.handshake_failure(exc.details() or "")
    return None


async def _wait_serving(channel: grpc.aio.Channel, address: str) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    deadline = asyncio.get_running_loop().time() + READY_TIMEOUT_S
    told = False
    while True:
        reply = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
        if reply.status == health_pb2.HealthCheckResponse.SERVING:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise ConnectionError(f"agent {address} is not serving after {READY_TIMEOUT_S:g} s")
        if not told:
            print(f"llmbench generate: waiting for agent {address} to load its model", file=sys.stderr)
            told = True
        await asyncio.sleep(0.2)


async def _check_access(stub: rpc.AgentStub, metadata: tuple) -> None:
    """Read one status report first, so a refused token surfaces as UNAUTHENTICATED: a Serve write that
    races the agent's refusal ends the call with a local INTERNAL instead (grpc aio's client)."""
    call = stub.WatchStatus(pb.StatusRequest(), metadata=metadata)
    try:
        await call.read()
    finally:
        call.cancel()


async def _serve_tokens(stub: rpc.AgentStub, prompts: list[Prompt], indices: list[int], max_new_tokens: int,
                        ignore_eos: bool, results: list[Result], metadata: tuple = ()) -> None:
    """All token prompts on one Serve stream, so the agent batches them."""
    if not indices:
        return
    call = stub.Serve(metadata=metadata)
    for start in range(0, len(indices), SUBMIT_CHUNK):
        batch = [pb.Query(id=i, prompt_tokens=prompts[i].tokens, max_new_tokens=max_new_tokens, ignore_eos=ignore_eos)
                 for i in indices[start:start + SUBMIT_CHUNK]]
        await call.write(pb.ServeRequest(submit=pb.QueryBatch(queries=batch)))
    left = len(indices)
    while left:
        msg = await call.read()
        if msg is grpc.aio.EOF:
            raise ConnectionError("the agent ended the stream before every query finished")
        left -= _apply(StepOutput(msg.step, list(msg.ids), list(msg.counts), list(msg.tokens),
                                  list(zip(msg.finished_ids, msg.finish_reasons)),
                                  [(e.id, e.code, e.message) for e in msg.errors]), results)
    await call.done_writing()


async def _generate_text(stub: rpc.AgentStub, i: int, text: str, max_new_tokens: int, ignore_eos: bool,
                         results: list[Result], metadata: tuple = ()) -> None:
    request = pb.GenerateRequest(text=text, max_new_tokens=max_new_tokens, ignore_eos=ignore_eos)
    try:
        async for msg in stub.Generate(request, metadata=metadata):
            results[i].tokens.extend(msg.tokens)
            if msg.finish_reason:
                results[i].finish_reason = FinishReason(msg.finish_reason).name.lower()
                results[i].text = msg.text
    except grpc.aio.AioRpcError as exc:
        if exc.code() not in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.OUT_OF_RANGE):
            raise
        results[i].error = exc.details()
