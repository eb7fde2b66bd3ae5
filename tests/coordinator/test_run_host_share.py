"""Local CPU agents of `llmbench run` share the host's memory as they share its cores: each of N sizes its
KV cache from 1/N of the agent's default --memory-fraction (two agents on a 128k-context model each took
0.90 of the host's available memory, and one was OOM-killed). GPU agents keep their device's default."""
from __future__ import annotations

import argparse

import pytest

from llmbench.agent.engine.types import EngineConfig
from llmbench.coordinator.commands import host_share, run_local


def args(agent_args: str = "", engine: str = "paged") -> argparse.Namespace:
    return argparse.Namespace(engine=engine, model="tiny", tokens_per_s=1000.0, agent_args=agent_args)


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(host_share, "visible_gpus", lambda: [])


def test_the_share_splits_the_agents_own_default():
    assert host_share.AGENT_MEMORY_FRACTION == EngineConfig().memory_fraction


def test_each_cpu_agent_gets_its_share_and_the_run_says_so(no_gpu):
    flags, line = host_share.memory_share(args(), 2)
    assert flags == ["--memory-fraction", "0.45"]
    assert line.startswith("Host memory is shared: each of the 2 CPU agents sizes its KV cache from 0.45 of the "
                           "memory available (--memory-fraction 0.45, the default 0.9 / 2;")
    shares = [float(host_share.memory_share(args(), n)[0][1]) for n in (3, 7, 256)]
    assert all(0 < share * n <= 0.9 for share, n in zip(shares, (3, 7, 256)))  # together at most the default


@pytest.mark.parametrize("agent_args", ["--memory-fraction 0.5", "--max-batch 8 --memory-fraction=0.5",
                                        "--num-kv-blocks 64", "--device cuda", "--device=cuda:1"])
def test_none_where_the_user_sized_memory_or_chose_a_gpu(no_gpu, agent_args):
    assert host_share.memory_share(args(agent_args), 2) == ([], "")


@pytest.mark.parametrize("agent_args", ["--num-kv-blocks 0", "--device cpu", "--device auto --max-batch 8"])
def test_sized_from_memory_on_the_cpu_they_share(no_gpu, agent_args):
    assert host_share.memory_share(args(agent_args), 4)[0] == ["--memory-fraction", "0.225"]


def test_none_for_one_agent_the_simulated_engine_or_auto_on_a_gpu(no_gpu, monkeypatch):
    assert host_share.memory_share(args(), 1) == ([], "")
    assert host_share.memory_share(args(engine="simulated"), 2) == ([], "")
    monkeypatch.setattr(host_share, "visible_gpus", lambda: ["0"])  # auto: the agents take the GPU
    assert host_share.memory_share(args(), 2) == ([], "")
    assert host_share.memory_share(args("--device cpu"), 2)[0] == ["--memory-fraction", "0.45"]


def test_the_users_own_flags_come_after_the_share_and_win():
    cmd = run_local.agent_command(args("--max-batch 8 --memory-frac 0.3"), shared=["--memory-fraction", "0.45"])
    assert cmd[cmd.index("--memory-fraction"):] == ["--memory-fraction", "0.45", "--max-batch", "8", "--memory-frac", "0.3"]
    assert "--memory-fraction" not in run_local.agent_command(args(), on_gpu=True)
