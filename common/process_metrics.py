"""The standard Prometheus process metrics (the names every exporter uses, unprefixed): CPU seconds,
resident and virtual memory, open and maximum file descriptors, threads, start time. From /proc on
Linux; elsewhere only what the resource module knows."""
from __future__ import annotations

import os
import resource
import threading
import time

from llmbench.common.prometheus import Family

_IMPORTED_AT_S = time.time()  # the start time where /proc cannot say: early in every command


def _proc_stat() -> list[str] | None:
    try:
        with open("/proc/self/stat") as f:
            return f.read().rsplit(")", 1)[1].split()  # the fields after the command name
    except OSError:
        return None


def _start_time_s(stat: list[str] | None) -> float:
    """Boot time plus the process's start in clock ticks after boot (proc(5) field 22)."""
    try:
        with open("/proc/stat") as f:
            boot = next(float(line.split()[1]) for line in f if line.startswith("btime "))
        return boot + int(stat[19]) / os.sysconf("SC_CLK_TCK") if stat else _IMPORTED_AT_S
    except (OSError, StopIteration):
        return _IMPORTED_AT_S


def _open_fds() -> int | None:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return None


def process_families() -> list[Family]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    stat = _proc_stat()  # proc(5) fields from the 3rd on: num_threads is the 20th, vsize the 23rd, rss the 24th
    families = [
        Family("process_cpu_seconds_total", "counter", "user and system CPU time of this process")
        .add(usage.ru_utime + usage.ru_stime),
        Family("process_start_time_seconds", "gauge", "when this process started, in seconds since the epoch")
        .add(_start_time_s(stat)),
        Family("process_threads", "gauge", "threads of this process (without /proc: Python's only)")
        .add(int(stat[17]) if stat else threading.active_count()),
    ]
    if stat is not None:
        families += [
            Family("process_virtual_memory_bytes", "gauge", "virtual memory size").add(int(stat[20])),
            Family("process_resident_memory_bytes", "gauge", "resident memory size")
            .add(int(stat[21]) * os.sysconf("SC_PAGE_SIZE")),
        ]
    fds = _open_fds()
    if fds is not None:
        families += [
            Family("process_open_fds", "gauge", "open file descriptors").add(fds),
            Family("process_max_fds", "gauge", "most open file descriptors allowed")
            .add(resource.getrlimit(resource.RLIMIT_NOFILE)[0]),
        ]
    return families
