"""Check a user.conf before LoadGen reads it: LoadGen ignores keys it does not know, so a typo
(`*.Server.target_qpz = 3`) would silently leave mlperf.conf's value in place, and a line it cannot parse
fails the whole file without saying which.

Lines are LoadGen's: `model.scenario.key = number`, `#` starts a comment. Whether LoadGen reads a key is
asked of the installed LoadGen itself, not of a list that could fall behind it: over the run's mlperf.conf
settings, the key set to 0 and to 1 must leave two different TestSettings. (LoadGen takes some keys only
from mlperf.conf or an audit.config, the log seeds for one; in a user.conf those are ignored too.) Lines
for another model or scenario are not this run's and are left alone.
"""
from __future__ import annotations

import re
import tempfile
from functools import lru_cache
from pathlib import Path

import mlperf_loadgen as lg

__all__ = ["problems"]

_LINE = re.compile(r"^\s*(?P<key>\S+)\s*=\s*(?P<value>\S+)\s*(#.*)?$")
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$|^0[xX][0-9a-fA-F]+$")
_SCENARIOS = ("SingleStream", "MultiStream", "Server", "Offline")


def _settings(line: str, model: str, scenario: str) -> dict:
    """TestSettings after mlperf.conf's values for model and scenario and then a user.conf of one line."""
    t = lg.TestSettings()
    t.scenario = getattr(lg.TestScenario, scenario)
    t.FromConfig("", model, scenario, 0)
    with tempfile.NamedTemporaryFile("w", suffix=".conf") as f:
        f.write(line + "\n")
        f.flush()
        t.FromConfig(f.name, model, scenario, 1)
    return {name: getattr(t, name) for name in dir(t) if not name.startswith("_")
            and not callable(getattr(t, name))}


@lru_cache(maxsize=None)
def read_by_loadgen(key: str, model: str, scenario: str) -> bool:
    """Whether LoadGen applies this key from a user.conf to a run of model and scenario."""
    return _settings(f"*.*.{key} = 0", model, scenario) != _settings(f"*.*.{key} = 1", model, scenario)


def problems(path: Path, model: str, scenario: str) -> list[str]:
    """One line per problem in a user.conf for a run of mlperf.conf's model and LoadGen's scenario: 'line N:
    ...'; empty if LoadGen reads every line of this run's as meant."""
    found = []
    for n, raw in enumerate(Path(path).read_text(errors="replace").splitlines(), start=1):
        text = raw.split("#", 1)[0].strip()
        if not text:
            continue
        m = _LINE.match(text)
        if m is None:
            found.append(f"line {n}: expected 'model.scenario.key = number', got {raw.strip()!r}")
            continue
        key, value = m["key"], m["value"]
        parts = key.split(".")
        if len(parts) < 3:
            found.append(f"line {n}: {key!r} is not model.scenario.key")
        elif not _NUMBER.match(value):
            found.append(f"line {n}: the value of {key} must be a number, got {value!r}")
        elif parts[-2] not in (*_SCENARIOS, "*"):
            found.append(f"line {n}: {parts[-2]!r} in {key} is not a LoadGen scenario "
                         f"({', '.join(_SCENARIOS)} or *)")
        elif ".".join(parts[:-2]) in (model, "*") and parts[-2] in (scenario, "*") \
                and not read_by_loadgen(parts[-1], model, scenario):
            found.append(f"line {n}: LoadGen does not take {parts[-1]!r} from a user.conf for {model} "
                         f"{scenario} ({key} would be ignored)")
    return found
