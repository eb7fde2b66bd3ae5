"""How the local agents of `llmbench run` share the host they all run on: its cores, and on the CPU its memory.

Each agent sizes itself as if it had the machine to itself: torch takes a thread per core, and a CPU
agent sizes its KV cache at --memory-fraction of the host memory available when it starts. N agents
side by side each get 1/N: OMP_NUM_THREADS, and --memory-fraction (the agent's default / N). Agents
on a GPU of their own (--gpus) size from their device, and keep its default.
"""
from __future__ import annotations

import argparse
import math
import os

from llmbench.coordinator.run.gpus import visible_gpus

# The agent's default --memory-fraction (EngineConfig.memory_fraction; the coordinator cannot import the
# agent, so a test holds the two equal).
AGENT_MEMORY_FRACTION = 0.9


def threads_per_agent(count: int) -> str:
    return str(max(1, (os.cpu_count() or 1) // count))


def flag_value(args: list[str], flag: str) -> str | None:
    """The value the last `flag V` or `flag=V` in args gives, as argparse reads it; None if none does."""
    value = None
    for i, arg in enumerate(args):
        if arg == flag and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith(flag + "="):
            value = arg.split("=", 1)[1]
    return value


def on_cpu(device: str | None) -> bool:
    """Whether an agent given --device `device` (None: not given, auto) runs on the CPU: auto takes a GPU
    when the agent sees one, and the agents see what this process does."""
    return device == "cpu" or (device in (None, "auto") and not visible_gpus())


def memory_share(args: argparse.Namespace, count: int) -> tuple[list[str], str]:
    """The flags that give each of `count` local agents without a GPU of its own its share of the host
    memory, and the line saying so; none where they do not share it (one agent, the simulated engine, a
    GPU) or where --agent-args already sizes the memory."""
    agent_args = args.agent_args.split()
    if count < 2 or args.engine != "paged" or flag_value(agent_args, "--memory-fraction") is not None:
        return [], ""
    if flag_value(agent_args, "--num-kv-blocks") not in (None, "0"):  # a fixed cache, not sized from memory
        return [], ""
    if not on_cpu(flag_value(agent_args, "--device")):
        return [], ""
    fraction = math.floor(AGENT_MEMORY_FRACTION / count * 1e4) / 1e4  # rounded down: together at most the default
    line = (f"Host memory is shared: each of the {count} CPU agents sizes its KV cache from {fraction:g} of the "
            f"memory available (--memory-fraction {fraction:g}, the default {AGENT_MEMORY_FRACTION:g} / {count}; "
            f"--agent-args '--memory-fraction F' sets another)")
    return ["--memory-fraction", f"{fraction:g}"], line
