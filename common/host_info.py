"""What a machine is, for a system description: CPU, memory, OS, GPUs and the software versions a run
depends on. Read without importing torch or initialising CUDA (a coordinator has no use for either):
package versions from their metadata, GPUs from nvidia-smi where it is installed."""
from __future__ import annotations

import importlib.metadata
import os
import platform
import shutil
import socket
import subprocess
from pathlib import Path

PACKAGES = ("llmbench", "torch", "triton", "mlcommons-loadgen", "transformers")
NVIDIA_SMI_TIMEOUT_S = 20.0
GPU_FIELDS = ("name", "memory.total", "driver_version")


def package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpuinfo() -> list[dict[str, str]]:
    """/proc/cpuinfo as one dict per logical CPU (empty off Linux)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    cpus = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(":", 1) for line in block.splitlines() if ":" in line)
        cpus.append({k.strip(): v.strip() for k, v in fields.items()})
    return cpus


def cpu() -> dict:
    cpus = _cpuinfo()
    sockets = {c.get("physical id") for c in cpus if c.get("physical id")}
    cores = {(c.get("physical id"), c.get("core id")) for c in cpus if c.get("core id")}
    model = next((c["model name"] for c in cpus if c.get("model name")), "") or platform.processor()
    return {"model": model or platform.machine(), "sockets": len(sockets) or 1,
            "cores": len(cores) or os.cpu_count() or 1, "threads": os.cpu_count() or 1, "arch": platform.machine()}


def memory_bytes() -> int:
    import psutil
    return int(psutil.virtual_memory().total)


def operating_system() -> str:
    try:
        name = platform.freedesktop_os_release().get("PRETTY_NAME", "")
    except OSError:
        name = ""
    kernel = f"{platform.system()} {platform.release()}"
    return f"{name} ({kernel})" if name else kernel


def gpus() -> tuple[list[dict], str | None]:
    """(one dict per GPU: name, memory in MiB, driver; nvidia-smi's CUDA version), ([], None) without it."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return [], None
    try:
        listed = subprocess.run([smi, f"--query-gpu={','.join(GPU_FIELDS)}", "--format=csv,noheader,nounits"],
                                capture_output=True, text=True, timeout=NVIDIA_SMI_TIMEOUT_S, check=True).stdout
        header = subprocess.run([smi], capture_output=True, text=True, timeout=NVIDIA_SMI_TIMEOUT_S).stdout
    except (OSError, subprocess.SubprocessError):
        return [], None
    found = []
    for line in listed.strip().splitlines():
        name, mem, driver = (part.strip() for part in line.split(","))
        found.append({"name": name, "memory_mib": int(float(mem)) if mem.replace(".", "").isdigit() else None,
                      "driver": driver})
    cuda = header.split("CUDA Version:", 1)[1].split()[0] if "CUDA Version:" in header else None
    return found, cuda


def describe() -> dict:
    """This machine, as the `host` of a run record."""
    found, cuda = gpus()
    return {"hostname": socket.gethostname(), "cpu": cpu(), "memory_bytes": memory_bytes(),
            "os": operating_system(), "python": platform.python_version(), "gpus": found, "cuda": cuda,
            "driver": found[0]["driver"] if found else None,
            "packages": {name: package_version(name) for name in PACKAGES}}
