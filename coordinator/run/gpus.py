"""Which local GPUs `llmbench run --gpus` gives its agents: one agent per GPU, each seeing only its own
through CUDA_VISIBLE_DEVICES.

The usable GPUs are the ones CUDA_VISIBLE_DEVICES allows when it is set (ids or UUIDs, as CUDA reads
it), else the ones `nvidia-smi -L` lists, else (no nvidia-smi) the ones torch sees. Torch is imported
only in that last case: the coordinator needs no CUDA of its own.
"""
from __future__ import annotations

import os
import re
import subprocess
from typing import Callable

NVIDIA_SMI_TIMEOUT_S = 60.0
SPEC_HELP = "all, a count N (the first N), or GPU ids such as 0,2 (one id: 3,)"


def visible_gpus() -> list[str]:
    """Ids to put in an agent's CUDA_VISIBLE_DEVICES, one per usable GPU."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        ids = []
        for entry in (e.strip() for e in env.split(",")):
            if not entry or entry.startswith("-"):
                break  # CUDA ignores everything from the first invalid entry on ("-1": no GPU)
            ids.append(entry)
        return ids
    try:
        listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=NVIDIA_SMI_TIMEOUT_S)
    except FileNotFoundError:
        return _torch_gpus()
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"nvidia-smi -L did not answer within {NVIDIA_SMI_TIMEOUT_S:g} s") from None
    if listed.returncode != 0:
        return []  # no driver or no device; nvidia-smi says so on stderr
    return re.findall(r"^GPU (\d+):", listed.stdout, re.MULTILINE)  # whole GPUs; MIG lines are indented


def _torch_gpus() -> list[str]:
    try:
        import torch
    except ImportError:
        return []
    return [str(i) for i in range(torch.cuda.device_count())]


def select_gpus(spec: str, detect: Callable[[], list[str]] = visible_gpus) -> list[str]:
    """The GPU id of each agent for `--gpus spec`."""
    spec = spec.strip()
    if spec != "all" and not spec.isdigit() and "," not in spec:
        raise ValueError(f"--gpus {spec!r}: use {SPEC_HELP}")
    visible = detect()
    if not visible:
        raise RuntimeError(f"--gpus {spec}: no GPU found (CUDA_VISIBLE_DEVICES, nvidia-smi -L and torch see none)")
    if spec == "all":
        return visible
    if spec.isdigit():
        n = int(spec)
        if not 1 <= n <= len(visible):
            raise ValueError(f"--gpus {n}: {len(visible)} GPU(s) here ({','.join(visible)})")
        return visible[:n]
    ids = [d.strip() for d in spec.split(",") if d.strip()]
    unknown = [d for d in ids if d not in visible]
    if unknown or not ids:
        raise ValueError(f"--gpus {spec}: no GPU {','.join(unknown) or spec} here (usable: {','.join(visible)})")
    if len(set(ids)) != len(ids):
        raise ValueError(f"--gpus {spec}: a GPU is named twice (one agent per GPU)")
    return ids
