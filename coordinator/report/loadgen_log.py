"""LoadGen's own record of a test, from its detail log: the settings it ran with, after mlperf.conf,
user.conf and audit.config (its `effective_*` records), and its result fields (`result_*`,
`early_stopping_*`), by LoadGen's names without the prefix."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from llmbench.coordinator.loadgen.detail_log import records

EFFECTIVE, RESULT, EARLY_STOPPING = "effective_", "result_", "early_stopping_"


@dataclass
class LoadGenLog:
    version: str | None = None
    effective: dict[str, object] = field(default_factory=dict)
    results: dict[str, object] = field(default_factory=dict)
    early_stopping: dict[str, object] = field(default_factory=dict)


def _json_safe(value: object) -> object:
    """LoadGen's values as JSON can hold them: its log may print NaN or inf, which JSON has no words for."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def read_loadgen_log(folder: Path) -> LoadGenLog:
    """The detail log in `folder`; empty fields where it is missing."""
    log = LoadGenLog()
    for record in records(folder):
        key, value = str(record.get("key", "")), _json_safe(record.get("value"))
        if key == "loadgen_version":
            log.version = str(value)
        for prefix, into in ((EFFECTIVE, log.effective), (RESULT, log.results), (EARLY_STOPPING, log.early_stopping)):
            if key.startswith(prefix):
                into[key[len(prefix):]] = value
    return log
