"""Role entry points of the TorchX mesh (coordinator/deploy/torchx_component.py); needs no torchx.

TorchX ends an app once every role has exited, but agents serve forever. So the coordinator role
writes a "done" file when its run ends (whatever the outcome) and each agent role stops its agent
when that file appears. The file must be on storage all roles share: the working folder with the
local schedulers, a ReadWriteMany volume on Kubernetes.

    python -m llmbench.coordinator.deploy.mesh_launch agent --done F -- --model tiny --port 50051 ...
    python -m llmbench.coordinator.deploy.mesh_launch coordinator --done F -- --agents ... --output ...
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def expand_env(args: list[str]) -> list[str]:
    """Replace ${NAME} with the environment's value (how cluster roles learn agent host names)."""
    def value(m: re.Match) -> str:
        if m.group(1) not in os.environ:
            raise ValueError(f"environment variable {m.group(1)} is not set (on Kubernetes, Volcano's svc plugin sets it)")
        return os.environ[m.group(1)]
    return [_VAR.sub(value, a) for a in args]


def llmbench_command() -> list[str]:
    beside = Path(sys.executable).parent / "llmbench"
    found = str(beside) if beside.exists() else shutil.which("llmbench")
    if found is None:
        raise FileNotFoundError("the llmbench command is not on PATH: install the package in this environment")
    return [found]


def run_until(cmd: list[str], done: Path, poll_s: float = 0.5, grace_s: float = 30.0) -> int:
    """Run cmd until it exits (its status) or `done` appears (stop it, 0)."""
    child = subprocess.Popen(cmd)
    previous = _forward_sigterm(child)
    try:
        while child.poll() is None:
            if done.exists():
                child.terminate()
                try:
                    child.wait(grace_s)
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait()
                return 0
            time.sleep(poll_s)
        return child.returncode
    finally:
        signal.signal(signal.SIGTERM, previous)
        if child.poll() is None:
            child.kill()


def run_then_mark(cmd: list[str], done: Path) -> int:
    """Run cmd to the end, then create `done` so the agent roles stop; returns cmd's status."""
    previous = signal.getsignal(signal.SIGTERM)
    try:
        child = subprocess.Popen(cmd)
        _forward_sigterm(child)
        return child.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)
        done.parent.mkdir(parents=True, exist_ok=True)
        done.touch()


def _forward_sigterm(child: subprocess.Popen) -> Any:
    """A cancelled app gets SIGTERM: pass it on and let the child shut down in its own time.
    Returns the handler it replaced."""
    def handler(signum: int, _frame: object) -> None:
        if child.poll() is None:
            child.send_signal(signum)

    return signal.signal(signal.SIGTERM, handler)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    own, rest = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    p = argparse.ArgumentParser(prog="python -m llmbench.coordinator.deploy.mesh_launch", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("role", choices=["agent", "coordinator"])
    p.add_argument("--done", type=Path, required=True, help="file the coordinator creates when its run is over")
    args = p.parse_args(own)
    try:
        cmd = [*llmbench_command(), args.role, *expand_env(rest)]
    except (ValueError, FileNotFoundError) as exc:
        print(f"mesh_launch: error: {exc}", file=sys.stderr)
        return 2
    if args.role == "agent":
        return run_until(cmd, args.done)
    return run_then_mark(cmd, args.done)


if __name__ == "__main__":
    raise SystemExit(main())
