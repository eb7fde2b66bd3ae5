"""Read LoadGen's mlperf_log_detail.txt: one `:::MLLOG {json}` record per line, written while the test runs."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Iterator

DETAIL_FILE = "mlperf_log_detail.txt"
POLL_S = 0.5


def records(log_dir: Path, newer_than: float = 0.0) -> Iterator[dict]:
    """The file's records; none if it is missing or last written before `newer_than` (a previous run's)."""
    path = log_dir / DETAIL_FILE
    try:
        if path.stat().st_mtime < newer_than:
            return
        text = path.read_text(errors="replace")
    except OSError:
        return
    for line in text.splitlines():
        if not line.startswith(":::MLLOG"):
            continue
        try:
            record = json.loads(line.split(":::MLLOG", 1)[1])
        except json.JSONDecodeError:  # a line still being written, or cut short by a run that died
            continue
        if isinstance(record, dict):
            yield record


def generated_sample_count(log_dir: Path, newer_than: float = 0.0) -> int | None:
    """How many samples LoadGen generated for this test (queries x samples per query: Offline is one
    query of them all); it logs both before issuing the first query."""
    found = {}
    for record in records(log_dir, newer_than):
        key, value = record.get("key"), record.get("value")
        if key in ("generated_query_count", "generated_samples_per_query") and isinstance(value, int):
            found[key] = value
    if len(found) < 2:
        return None
    return found["generated_query_count"] * found["generated_samples_per_query"]


async def wait_generated_count(log_dir: Path, started: float) -> int:
    """Poll the log of the test that started at `started` (time.time()) until the count appears."""
    while (count := generated_sample_count(log_dir, started)) is None:
        await asyncio.sleep(POLL_S)
    return count
