"""`llmbench run --gpus`: which GPUs, one agent each, each agent seeing only its own (no GPU needed)."""
from __future__ import annotations

import argparse
import os
import stat
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from llmbench.coordinator.commands import run_local
from llmbench.coordinator.run.gpus import select_gpus, visible_gpus

CLI = [sys.executable, "-c", "import sys; from llmbench.cli import main; sys.exit(main())"]
NVIDIA_SMI_L = """GPU 0: NVIDIA H200 (UUID: GPU-0a)
GPU 1: NVIDIA H200 (UUID: GPU-1b)
  MIG 1g.18gb     Device  0: (UUID: MIG-aa)
GPU 2: NVIDIA H200 (UUID: GPU-2c)
GPU 3: NVIDIA H200 (UUID: GPU-3d)
"""


def four() -> list[str]:
    return ["0", "1", "2", "3"]


def test_select_all_count_and_ids():
    assert select_gpus("all", four) == ["0", "1", "2", "3"]
    assert select_gpus("2", four) == ["0", "1"]
    assert select_gpus("0,2", four) == ["0", "2"]
    assert select_gpus("3,", four) == ["3"]
    assert select_gpus(" 1, 3 ", four) == ["1", "3"]


@pytest.mark.parametrize("spec, detect, message", [
    ("all", lambda: [], "no GPU found"),
    ("1", lambda: [], "no GPU found"),
    ("5", four, "4 GPU(s) here (0,1,2,3)"),
    ("0", four, "4 GPU(s) here"),
    ("0,7", four, "no GPU 7 here (usable: 0,1,2,3)"),
    ("1,1", four, "named twice"),
    ("gpu0", four, "use all, a count N"),
    ("", four, "use all, a count N"),
])
def test_select_gpus_says_what_is_wrong(spec, detect, message):
    with pytest.raises((ValueError, RuntimeError), match=message.replace("(", r"\(").replace(")", r"\)")):
        select_gpus(spec, detect)


def fake_nvidia_smi(folder: Path, listing: str, status: int = 0) -> str:
    """A PATH with an nvidia-smi that prints `listing`."""
    folder.mkdir(parents=True, exist_ok=True)
    tool = folder / "nvidia-smi"
    tool.write_text(f"#!/bin/sh\n[ \"$1\" = -L ] || exit 9\ncat <<'EOF'\n{listing}EOF\nexit {status}\n")
    tool.chmod(tool.stat().st_mode | stat.S_IEXEC)
    return f"{folder}{os.pathsep}{os.environ['PATH']}"


def test_visible_gpus_from_cuda_visible_devices(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,GPU-5e,1")
    assert visible_gpus() == ["3", "GPU-5e", "1"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,-1,3")  # CUDA stops at the first invalid entry
    assert visible_gpus() == ["2"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert visible_gpus() == []


def test_visible_gpus_from_nvidia_smi(monkeypatch, tmp_path):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("PATH", fake_nvidia_smi(tmp_path / "bin", NVIDIA_SMI_L))
    assert visible_gpus() == ["0", "1", "2", "3"]  # whole GPUs; the MIG line is not one
    monkeypatch.setenv("PATH", fake_nvidia_smi(tmp_path / "broken", "NVIDIA-SMI has failed\n", status=9))
    assert visible_gpus() == []


def test_paged_agents_on_a_gpu_must_use_it():
    args = argparse.Namespace(engine="paged", model="llama3.1-8b", agent_args="--max-batch 8")
    cmd = run_local.agent_command(args, on_gpu=True)
    assert cmd[cmd.index("--device") + 1] == "cuda" and cmd.index("--device") < cmd.index("--max-batch")
    assert "--device" not in run_local.agent_command(args)


def environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="reads agents' environments from /proc")
def test_one_agent_per_gpu_each_sees_only_its_own(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")  # what the parent sees must not leak to the agents
    args = argparse.Namespace(agents=7, engine="simulated", tokens_per_s=1000.0, agent_args="")
    agents = run_local.start_agents(args, tmp_path, gpus=["3", "1"])
    try:
        assert [a.gpu for a in agents] == ["3", "1"]  # --gpus decides the count, not --agents
        assert [environ(a.process.pid)["CUDA_VISIBLE_DEVICES"] for a in agents] == ["3", "1"]
        assert len({a.address for a in agents}) == 2 and all(a.address for a in agents)
        assert [a.log_path.name for a in agents] == ["agent-0.log", "agent-1.log"]
        assert agents[0].describe() == f"{agents[0].address} (GPU 3)"
    finally:
        run_local.stop_agents(agents)
    assert all(a.process.poll() is not None for a in agents)


def test_agents_that_fail_to_start_leave_none_behind(tmp_path, monkeypatch):
    real = run_local.agent_command
    made: list[bool] = []

    def second_one_breaks(args, on_gpu=False, shared=None):
        made.append(on_gpu)
        return real(args, on_gpu, shared) if len(made) == 1 else [sys.executable, "-c", "import sys; sys.exit(3)"]

    monkeypatch.setattr(run_local, "agent_command", second_one_breaks)
    before = set(psutil.Process().children())
    args = argparse.Namespace(agents=2, engine="simulated", tokens_per_s=1000.0, agent_args="")
    with pytest.raises(RuntimeError, match="agent-1 exited: status 3"):
        run_local.start_agents(args, tmp_path, gpus=["0", "1"])
    assert made == [True, True]
    assert set(psutil.Process().children()) <= before  # the agent that did start was stopped


@pytest.mark.slow
def test_llmbench_run_gpus_all_starts_one_agent_per_listed_gpu(tmp_path):
    env = {**os.environ, "PATH": fake_nvidia_smi(tmp_path / "bin", NVIDIA_SMI_L)}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    r = subprocess.run([*CLI, "run", "--gpus", "all", "--engine", "simulated", "--tokens-per-s", "20000",
                        "--scenario", "Offline", "--max-samples", "40", "--output", str(tmp_path / "out"),
                        "--no-tui", "--progress", "0"], capture_output=True, text=True, timeout=180, env=env)
    assert r.returncode == 1 and "Exit status 1: LoadGen's result is INVALID" in r.stdout, r.stdout + r.stderr  # < 20 s
    assert "4 local agents on GPUs 0,1,2,3" in r.stdout
    listening = next(line for line in r.stdout.splitlines() if line.startswith("agents listening on"))
    assert [f"(GPU {i})" in listening for i in range(4)] == [True] * 4
    assert sorted(p.name for p in (tmp_path / "out").glob("agent-*.log")) == [f"agent-{i}.log" for i in range(4)]


def test_llmbench_run_gpus_without_a_gpu_is_one_clear_line(tmp_path):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "-1"}
    r = subprocess.run([*CLI, "run", "--gpus", "all", "--output", str(tmp_path / "out")], capture_output=True,
                       text=True, timeout=60, env=env)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip() == ("llmbench run: error: --gpus all: no GPU found (CUDA_VISIBLE_DEVICES, "
                                "nvidia-smi -L and torch see none)")
    r = subprocess.run([*CLI, "run", "--gpus", "2", "--agents", "3", "--output", str(tmp_path / "out")],
                       capture_output=True, text=True, timeout=60, env={**os.environ, "CUDA_VISIBLE_DEVICES": "4,5"})
    assert r.returncode == 2 and "--agents 3 and --gpus 2 (2 GPUs) disagree" in r.stderr
