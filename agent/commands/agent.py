"""`llmbench agent`: serve one model over gRPC until SIGTERM/SIGINT.

Binds to 127.0.0.1 unless --host says otherwise: an agent answers anyone who can reach its port,
so exposing it to the network is an explicit choice (--host 0.0.0.0 in a pod, behind a NetworkPolicy).
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import math
import os
import re
import signal
import socket
import sys
from typing import Callable

from llmbench.agent import attention
from llmbench.agent.server import metrics, sdnotify
from llmbench.agent.model.config import PRESETS
from llmbench.agent.engine.watch import DEFAULT_STALL_S
from llmbench.agent.engine.factory import create_engine
from llmbench.agent.server.grpc_server import AgentServer
from llmbench.agent.engine.types import EngineConfig
from llmbench.common.auth import ServerSecurity, add_server_arguments, server_security
from llmbench.common.stall import HUNG_FACTOR

log = logging.getLogger("llmbench.agent")
LISTENING_LINE = "llmbench-agent: listening on {address}"
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


# A flag's rule: (what it must be, the test). Flags left unset (None) are not checked.
Rule = tuple[str, Callable[[float], bool]]


def at_least(low: float) -> Rule:
    return f">= {low}", lambda v: v >= low


def above(low: float) -> Rule:
    return f"> {low}", lambda v: v > low


FRACTION: Rule = ("in (0, 1]", lambda v: 0 < v <= 1)
PORT: Rule = ("a port number in 0..65535", lambda v: 0 <= v <= 65535)

ENGINE_RULES: dict[str, Rule] = {
    "tokens_per_s": above(0), "memory_fraction": FRACTION, "max_batch": at_least(1),
    "max_step_tokens": at_least(1), "num_kv_blocks": at_least(0), "block_size": at_least(1),
    "tpot_headroom": FRACTION,
}
AGENT_RULES: dict[str, Rule] = {
    "port": PORT, "health_port": PORT, "metrics_port": PORT, "grace": at_least(0), "stall_timeout": above(0),
}
# Engine flags default to None ("not given"), so `generate --agent` can tell which ones were passed.
ENGINE_FLAGS = ("model", "engine", "tokens_per_s", "dtype", "device", "memory_fraction", "max_batch",
                "max_step_tokens", "tpot_headroom", "num_kv_blocks", "block_size", "attention", "quantization", "kv_cache_dtype",
                "overlap", "url", "api_key_file", "served_model")
ENDPOINT_FLAGS = ("url", "api_key_file", "served_model")


def check_flags(args: argparse.Namespace, rules: dict[str, Rule]) -> None:
    """One line naming every given flag that breaks its rule, with its value."""
    problems = [f"--{dest.replace('_', '-')} must be {rule}, got {value}"
                for dest, (rule, ok) in rules.items()
                if (value := getattr(args, dest)) is not None and not (math.isfinite(value) and ok(value))]
    if problems:
        raise ValueError("; ".join(problems))


def given_engine_flags(args: argparse.Namespace) -> list[str]:
    return [f"--{dest.replace('_', '-')}" for dest in ENGINE_FLAGS if getattr(args, dest) is not None]


def add_engine_arguments(p: argparse.ArgumentParser) -> None:
    """Flags shared by every command that builds an engine (agent, generate)."""
    d = EngineConfig()
    p.add_argument("--model", help=f"HF model folder or preset ({', '.join(PRESETS)}); "
                                   "not needed with --engine simulated")
    p.add_argument("--engine", choices=["paged", "simulated", "openai"],
                   help=f"paged: the real engine; simulated: fake tokens at --tokens-per-s, no model; openai: an "
                        f"OpenAI-compatible server at --url (vLLM, SGLang, TensorRT-LLM, llama.cpp) (default: {d.engine})")
    p.add_argument("--tokens-per-s", type=float,
                   help=f"simulated engine: output tokens per second of the whole engine (default: {d.tokens_per_s:g})")
    p.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"],
                   help=f"auto: float32 on CPU, bfloat16 on GPU (default: {d.dtype})")
    p.add_argument("--device", help=f"auto, cpu, cuda or cuda:N (default: {d.device})")
    p.add_argument("--memory-fraction", type=float,
                   help=f"share of device memory for weights + KV cache (default: {d.memory_fraction:g})")
    p.add_argument("--max-batch", type=int, help=f"most queries running at once (default: {d.max_batch})")
    p.add_argument("--max-step-tokens", type=int,
                   help=f"most tokens in one engine step (default: {d.max_step_tokens})")
    add_headroom_argument(p)
    p.add_argument("--num-kv-blocks", type=int,
                   help=f"KV cache blocks; 0: size from memory (default: {d.num_kv_blocks})")
    p.add_argument("--block-size", type=int,
                   help=f"tokens per KV block, at most the model's max context; a multiple of 256 with "
                        f"--attention flash (default: {d.block_size})")
    p.add_argument("--attention", choices=attention.names(),
                   help=f"auto: torch on CPU; flash-attn on GPU when installed and --block-size fits it, "
                        f"else triton (head_dim a power of two >= 16), else torch (default: {d.attention})")
    add_precision_arguments(p)
    add_overlap_argument(p)
    add_endpoint_arguments(p)


def add_endpoint_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", help="openai engine: the server's OpenAI base URL, http://HOST:PORT/v1")
    p.add_argument("--api-key-file", help="openai engine: a file whose one line is the server's API key "
                                          "(sent as a bearer token)")
    p.add_argument("--served-model", help="openai engine: the model name to ask the server for "
                                          "(default: the first one it lists)")


def add_headroom_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tpot-headroom", type=float,
                   help="for queries with a TPOT limit (Server, Interactive), steps aim at this share of the "
                        f"tightest one (default: {EngineConfig().tpot_headroom:g})")


def add_overlap_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--overlap", action=argparse.BooleanOptionalAction, default=None,
                   help="on CUDA, schedule and launch step N+1 before reading step N's tokens "
                        f"(default: {'on' if EngineConfig().overlap else 'off'})")


def add_precision_arguments(p: argparse.ArgumentParser) -> None:
    """--quantization and --kv-cache-dtype, named as in vLLM (None: not given)."""
    d = EngineConfig()
    p.add_argument("--quantization", choices=["none", "fp8"],
                   help="fp8: the layer GEMMs in e4m3 (per-channel weight, per-token activation scales); "
                        f"embeddings, norms and LM head stay in --dtype (default: {d.quantization})")
    p.add_argument("--kv-cache-dtype", choices=["auto", "fp8"],
                   help=f"auto: the model dtype; fp8: e4m3 with scale 1, half the KV bytes (default: {d.kv_cache_dtype})")


def engine_config(args: argparse.Namespace, command_rules: dict[str, Rule] | None = None) -> EngineConfig:
    """An EngineConfig from the flags (defaults for those not given), checked before anything starts;
    the command's own numeric flags (command_rules) are checked in the same pass."""
    check_flags(args, ENGINE_RULES | (command_rules or {}))
    given = {dest: value for dest in ENGINE_FLAGS if (value := getattr(args, dest)) is not None}
    cfg = EngineConfig(**given)
    if not _DEVICE.fullmatch(cfg.device):
        raise ValueError(f"--device {cfg.device!r}: use auto, cpu, cuda or cuda:N")
    if cfg.attention == "flash" and cfg.block_size % 256:
        raise ValueError(f"--block-size must be a multiple of 256 with --attention flash (flash-attn's paged "
                         f"KV needs it), got {cfg.block_size}")
    if cfg.engine == "paged" and not args.model:
        raise ValueError(f"--model is required: an HF model folder or a preset ({', '.join(PRESETS)})")
    endpoint_flags = [f"--{dest.replace('_', '-')}" for dest in ENDPOINT_FLAGS if getattr(args, dest) is not None]
    if cfg.engine != "openai" and endpoint_flags:
        raise ValueError(f"{', '.join(endpoint_flags)} need --engine openai")
    cfg.model = {"simulated": "simulated", "openai": cfg.served_model or cfg.url}.get(cfg.engine, args.model)
    return cfg


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_engine_arguments(p)
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind; 0.0.0.0 for all (default: %(default)s, loopback only)")
    p.add_argument("--port", type=int, default=50051, help="port to bind; 0 picks a free one (default: %(default)s)")
    p.add_argument("--agent-id", default="", help="identity in status reports (default: HOST:PORT)")
    p.add_argument("--node-name", default="", help="node in status reports (default: $NODE_NAME or the hostname)")
    p.add_argument("--grace", type=float, default=10.0,
                   help="seconds running queries may take to finish after SIGTERM (default: %(default)g)")
    add_server_arguments(p)
    p.add_argument("--health-port", type=int,
                   help="also serve grpc.health.v1 alone, in plaintext, on this port (kubelet probes cannot do "
                        "TLS) (default: none)")
    p.add_argument("--stall-timeout", type=float, default=DEFAULT_STALL_S,
                   help=f"seconds the engine may make no step while it has work (a step under way: up to "
                        f"{HUNG_FACTOR:g}x the slowest step so far) before health is NOT_SERVING and the "
                        "systemd watchdog pings stop (default: %(default)g)")
    p.add_argument("--metrics-port", type=int,
                   help="serve Prometheus metrics over HTTP on this port at /metrics (on --host; 0 picks one) "
                        "(default: none)")


def run(args: argparse.Namespace) -> int:
    cfg = engine_config(args, AGENT_RULES)
    security = server_security(args, args.host)
    node = args.node_name or os.environ.get("NODE_NAME") or socket.gethostname()
    stopped_by: list[int] = []
    loaded = asyncio.run(serve(cfg, args.host, args.port, args.agent_id, node, args.grace, security,
                               args.health_port, args.stall_timeout, args.metrics_port, stopped_by))
    # SIGTERM is the service manager's ordinary stop (0); Ctrl-C is an interruption (130, as run and
    # coordinator give).
    code = 130 if stopped_by[:1] == [signal.SIGINT] else 0
    if not loaded:
        # Stopped while the model was still loading: that thread sits inside torch and cannot be
        # interrupted, and finalizing the interpreter under it aborts the process. Leave at once.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


async def serve(cfg: EngineConfig, host: str, port: int, agent_id: str, node_name: str, grace_s: float,
                security: ServerSecurity | None = None, health_port: int | None = None,
                stall_s: float = DEFAULT_STALL_S, metrics_port: int | None = None,
                stopped_by: list[int] | None = None) -> bool:
    """Serve until SIGTERM/SIGINT (appended to stopped_by); returns whether the engine had finished
    loading. Tells systemd (Type=notify) STATUS while loading, READY=1 once warm, WATCHDOG=1 while
    healthy, STOPPING=1."""
    # Building the engine only reads the model's config: bad paths and configs fail before we bind.
    server = AgentServer(create_engine(cfg), agent_id, node_name, security, stall_s)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = stopped_by if stopped_by is not None else []
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda sig=sig: (signals.append(sig), stop.set()))
    bound = await server.start(host, port, health_port)
    address = f"{host}:{bound}"
    print(LISTENING_LINE.format(address=address), flush=True)
    log.info("agent port %s: %s%s", address, server.security.describe(),
             f"; plaintext health on port {server.health_port}" if health_port is not None else "")
    sdnotify.status(f"loading {cfg.model} ({cfg.engine} engine); listening on {address}, health NOT_SERVING")
    load = asyncio.ensure_future(server.load())
    stopped = asyncio.ensure_future(stop.wait())
    watchdog: asyncio.Future | None = None
    exporter = metrics.exporter(server.reporter, host, metrics_port) if metrics_port is not None else None
    try:
        if exporter is not None:
            log.info("Prometheus metrics on http://%s:%d/metrics", host, exporter.start())
        await asyncio.wait({load, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if load.done():
            load.result()  # a failed load ends the agent with its error
            sdnotify.ready(f"serving {server.engine.info.name} ({cfg.engine} engine) on {address}")
            watchdog = asyncio.ensure_future(sdnotify.run_watchdog(lambda: server.healthy))
            await stopped
        log.info("stopping: NOT_SERVING, up to %g s for running queries", grace_s)
    finally:
        sdnotify.stopping(f"stopping: up to {grace_s:g} s for running queries")
        for task in (load, stopped, watchdog):
            if task is not None:
                task.cancel()
        await server.stop(grace_s)
        if exporter is not None:
            exporter.stop()
    return server.ready
