"""`llmbench agent`: serve one model over gRPC until SIGTERM/SIGINT.

Binds to 127.0.0.1 unless --host says otherwise: an agent answers anyone who can reach its port,
so exposing it to the network is an explicit choice (--host 0.0.0.0 in a pod, behind a NetworkPolicy).
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import signal
import socket
import sys

from llmbench.agent import prometheus, sdnotify
from llmbench.agent.config import PRESETS
from llmbench.agent.engine_watch import DEFAULT_STALL_S
from llmbench.agent.factory import create_engine
from llmbench.agent.server import AgentServer
from llmbench.agent.types import EngineConfig
from llmbench.common.auth import ServerSecurity, add_server_arguments, server_security

log = logging.getLogger("llmbench.agent")
LISTENING_LINE = "llmbench-agent: listening on {address}"
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


def add_engine_arguments(p: argparse.ArgumentParser) -> None:
    """Flags shared by every command that builds an engine (agent, generate)."""
    d = EngineConfig()
    p.add_argument("--model", help=f"HF model folder or preset ({', '.join(PRESETS)}); "
                                   "not needed with --engine simulated")
    p.add_argument("--engine", choices=["paged", "simulated"], default=d.engine,
                   help="paged: the real engine; simulated: fake tokens at --tokens-per-s, no model")
    p.add_argument("--tokens-per-s", type=float, default=d.tokens_per_s,
                   help="simulated engine: output tokens per second of the whole engine")
    p.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"], default=d.dtype,
                   help="auto: float32 on CPU, bfloat16 on GPU")
    p.add_argument("--device", default=d.device, help="auto, cpu, cuda or cuda:N")
    p.add_argument("--memory-fraction", type=float, default=d.memory_fraction,
                   help="share of device memory for weights + KV cache")
    p.add_argument("--max-batch", type=int, default=d.max_batch, help="most queries running at once")
    p.add_argument("--max-step-tokens", type=int, default=d.max_step_tokens, help="most tokens in one engine step")
    p.add_argument("--num-kv-blocks", type=int, default=d.num_kv_blocks, help="KV cache blocks (0: size from memory)")
    p.add_argument("--block-size", type=int, default=d.block_size, help="tokens per KV block")
    p.add_argument("--attention", choices=["auto", "torch", "triton", "flash"], default=d.attention)
    add_precision_arguments(p)


def add_precision_arguments(p: argparse.ArgumentParser) -> None:
    """--quantization and --kv-cache-dtype, named as in vLLM."""
    d = EngineConfig()
    p.add_argument("--quantization", choices=["none", "fp8"], default=d.quantization,
                   help="fp8: the layer GEMMs in e4m3 (per-channel weight, per-token activation scales); "
                        "embeddings, norms and LM head stay in --dtype")
    p.add_argument("--kv-cache-dtype", choices=["auto", "fp8"], default=d.kv_cache_dtype,
                   help="auto: the model dtype; fp8: e4m3 with scale 1 (half the KV bytes)")


def engine_config(args: argparse.Namespace) -> EngineConfig:
    """An EngineConfig from the flags, with the model checked before anything starts."""
    if not _DEVICE.fullmatch(args.device):
        raise ValueError(f"--device {args.device!r}: use auto, cpu, cuda or cuda:N")
    for flag in ("max_batch", "max_step_tokens", "block_size"):
        if getattr(args, flag) <= 0:
            raise ValueError(f"--{flag.replace('_', '-')} must be > 0")
    if args.num_kv_blocks < 0 or not 0 < args.memory_fraction <= 1 or args.tokens_per_s <= 0:
        raise ValueError("--num-kv-blocks must be >= 0, --memory-fraction in (0, 1], --tokens-per-s > 0")
    if args.engine == "paged" and not args.model:
        raise ValueError(f"--model is required: an HF model folder or a preset ({', '.join(PRESETS)})")
    model = "simulated" if args.engine == "simulated" else args.model
    return EngineConfig(model=model, engine=args.engine, dtype=args.dtype, device=args.device,
                        memory_fraction=args.memory_fraction, num_kv_blocks=args.num_kv_blocks,
                        block_size=args.block_size, max_batch=args.max_batch, max_step_tokens=args.max_step_tokens,
                        attention=args.attention, quantization=args.quantization,
                        kv_cache_dtype=args.kv_cache_dtype, tokens_per_s=args.tokens_per_s)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_engine_arguments(p)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback only; 0.0.0.0 for all)")
    p.add_argument("--port", type=int, default=50051, help="port to bind; 0 picks a free one")
    p.add_argument("--agent-id", default="", help="identity in status reports (default HOST:PORT)")
    p.add_argument("--node-name", default="", help="node in status reports (default $NODE_NAME or the hostname)")
    p.add_argument("--grace", type=float, default=10.0,
                   help="seconds running queries may take to finish after SIGTERM")
    add_server_arguments(p)
    p.add_argument("--health-port", type=int,
                   help="also serve grpc.health.v1 alone, in plaintext, on this port (kubelet probes cannot do TLS)")
    p.add_argument("--stall-timeout", type=float, default=DEFAULT_STALL_S,
                   help="seconds the engine may make no step while it has work before health is NOT_SERVING "
                        "and the systemd watchdog pings stop")
    p.add_argument("--metrics-port", type=int,
                   help="serve Prometheus metrics over HTTP on this port at /metrics (on --host; 0 picks one)")


def run(args: argparse.Namespace) -> int:
    cfg = engine_config(args)
    for flag in ("port", "health_port", "metrics_port"):
        if not 0 <= (getattr(args, flag) or 0) <= 65535:
            raise ValueError(f"--{flag.replace('_', '-')} {getattr(args, flag)}: not a port number")
    if args.stall_timeout <= 0:
        raise ValueError("--stall-timeout must be > 0")
    security = server_security(args, args.host)
    node = args.node_name or os.environ.get("NODE_NAME") or socket.gethostname()
    if not asyncio.run(serve(cfg, args.host, args.port, args.agent_id, node, args.grace, security,
                             args.health_port, args.stall_timeout, args.metrics_port)):
        # Stopped while the model was still loading: that thread sits inside torch and cannot be
        # interrupted, and finalizing the interpreter under it aborts the process. Leave at once.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return 0


async def serve(cfg: EngineConfig, host: str, port: int, agent_id: str, node_name: str, grace_s: float,
                security: ServerSecurity | None = None, health_port: int | None = None,
                stall_s: float = DEFAULT_STALL_S, metrics_port: int | None = None) -> bool:
    """Serve until SIGTERM/SIGINT; returns whether the engine had finished loading. Tells systemd
    (Type=notify) STATUS while loading, READY=1 once warm, WATCHDOG=1 while healthy, STOPPING=1."""
    # Building the engine only reads the model's config: bad paths and configs fail before we bind.
    server = AgentServer(create_engine(cfg), agent_id, node_name, security, stall_s)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    bound = await server.start(host, port, health_port)
    address = f"{host}:{bound}"
    print(LISTENING_LINE.format(address=address), flush=True)
    log.info("agent port %s: %s%s", address, server.security.describe(),
             f"; plaintext health on port {server.health_port}" if health_port is not None else "")
    sdnotify.status(f"loading {cfg.model} ({cfg.engine} engine); listening on {address}, health NOT_SERVING")
    load = asyncio.ensure_future(server.load())
    stopped = asyncio.ensure_future(stop.wait())
    watchdog: asyncio.Future | None = None
    metrics = prometheus.exporter(server.reporter, host, metrics_port) if metrics_port is not None else None
    try:
        if metrics is not None:
            log.info("Prometheus metrics on http://%s:%d/metrics", host, metrics.start())
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
        if metrics is not None:
            metrics.stop()
    return server.ready
