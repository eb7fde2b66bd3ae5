"""Read LoadGen's mlperf_log_detail.txt: one `:::MLLOG {json}` record per line, written while the test runs."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Iterator

DETAIL_FILE = "mlperf_log_detail.txt"
POLL_S = 0.5


def records(log_dir: Path) -> Iterator[dict]:
    """The file's records; none if it is missing."""
    try:
        text = (log_dir / DETAIL_FILE).read_text(errors="replace")
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


def generated_sample_count(log_dir: Path) -> int | None:
    """How many samples LoadGen generated for this test (queries x samples per query: Offline is one
    query of them all); it logs both before issuing the first query."""
    found = {}
    for record in records(log_dir):
        key, value = record.get("key"), record.get("value")
        if key in ("generated_query_count", "generated_samples_per_query") and isinstance(value, int):
            found[key] = value
    if len(found) < 2:
        return None
    return found["generated_query_count"] * found["generated_samples_per_query"]


async def wait_generated_count(log_dir: Path) -> int:
    """Poll the running test's log (an earlier run's was removed before it started) until the count appears."""
    while (count := generated_sample_count(log_dir)) is None:
        await asyncio.sleep(POLL_S)
    return count
