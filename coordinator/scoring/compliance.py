"""MLPerf compliance TEST06, the one that applies to LLMs, checked on LoadGen's accuracy log.

A TEST06 run is a performance run under TEST06_AUDIT_CONFIG: LoadGen then logs a sample of
~100 responses to mlperf_log_accuracy.json. LoadGen 6.0.17 writes, per entry, `data` (the whole
output, hex of little-endian int32), `token_count` (n_tokens given with the response, when
use_token_latencies=1) and, in every scenario but Offline, `token_data` (what the SUT reported
through FirstTokenComplete). The checks, as in MLPerf's TEST06 verification:
- first token: `token_data` is the start of `data` (skipped for Offline);
- EOS: no output ends in more than one EOS (the first token not counted, so an output of exactly
  two EOS tokens passes, as MLPerf's check allows);
- sample length: the number of tokens in `data` equals `token_count`.
A verdict also needs proof that the run was under an audit.config: LoadGen says so in
mlperf_log_detail.txt ("Found Audit Config file"). Without that log the audit cannot be confirmed,
and TEST06 fails whatever the checks say.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from llmbench.coordinator.scoring.accuracy import decode_tokens, read_log
from llmbench.coordinator.loadgen.detail_log import DETAIL_FILE, records

LLAMA3_EOS = (128009,)  # <|eot_id|>, the EOS of Llama-3.1-8B-Instruct
LOADGEN_SCENARIOS = ("Offline", "Server", "SingleStream", "MultiStream")  # as its logs name them (any submitter's)
# TEST06's audit settings (mlcommons/inference compliance/TEST06): a performance run (mode 2) of at
# least 100 queries, no minimum duration, ~100 responses logged for the checks, no equal-issue mode.
# (the audit.config key, the TestSettings attribute it sets, the value): LoadGen reads audit.config last,
# over mlperf.conf and user.conf, and the run's settings table shows the same values.
TEST06_SETTINGS = (
    ("mode", None, 2),  # PerformanceOnly, as the run's own mode
    ("accuracy_log_rng_seed", "accuracy_log_rng_seed", 720381539243781796),
    ("accuracy_log_sampling_target", "accuracy_log_sampling_target", 100),
    ("min_query_count", "min_query_count", 100),
    ("min_duration", "min_duration_ms", 0),
    ("sample_concatenate_permutation", "sample_concatenate_permutation", 0),
)
TEST06_AUDIT_CONFIG = ("# MLPerf compliance TEST06 audit settings, read by LoadGen in place of mlperf.conf/user.conf "
                       "values.\n# Keys are model.scenario.key; '*' matches any.\n"
                       + "".join(f"*.*.{key} = {value}\n" for key, _, value in TEST06_SETTINGS))
# What the settings table shows: the values LoadGen's own verdict is reached under, far from a performance run's.
TEST06_OVERRIDES = tuple((attr, value, "TEST06's audit.config") for _, attr, value in TEST06_SETTINGS if attr)


@dataclass
class Check:
    name: str
    passed: bool | None  # None: skipped
    detail: str

    def line(self) -> str:
        verdict = "SKIPPED" if self.passed is None else "PASS" if self.passed else "FAIL"
        return f"{self.name + ':':<22} {verdict}  ({self.detail})"


@dataclass
class Test06Result:
    log: Path
    scenario: str
    entries: int
    checks: list[Check] = field(default_factory=list)
    audited: bool | None = None  # LoadGen's detail log says it read an audit.config; None: no detail log

    @property
    def passed(self) -> bool:
        # A log LoadGen wrote without TEST06's audit.config is some other run's, whatever it contains.
        return self.audited is True and all(c.passed is not False for c in self.checks)

    def report(self) -> str:
        head = [f"TEST06 on {self.log} ({self.scenario}, {self.entries} logged responses)"]
        if self.audited is None:
            head.append(f"the audit cannot be confirmed: no {DETAIL_FILE} beside the accuracy log (LoadGen says there "
                        "whether it read TEST06's audit.config), so FAIL whatever the checks say")
        elif not self.audited:
            head.append("LoadGen read no audit.config for this run, so it is not a TEST06 run: FAIL whatever the "
                        "checks say (run with --compliance TEST06, or under `--write-audit-config`)")
        return "\n".join([*head, *(c.line() for c in self.checks), f"TEST06: {'PASS' if self.passed else 'FAIL'}"])

    def verify_accuracy_txt(self) -> str:
        """The verify_accuracy.txt of an MLPerf submission's compliance folder."""
        first, eos, length = self.checks
        text = "First token check pass: " + ("Skipped" if first.passed is None else str(first.passed)) + "\n"
        text += f"EOS check pass: {eos.passed}\nSample length check pass: {length.passed}\n"
        return text + ("TEST06 verification complete\n" if self.passed else "TEST06 verification failed\n")


def write_audit_config(directory: str | Path) -> Path:
    """Write TEST06's audit.config into `directory`; give its path to LoadGen's StartTest*."""
    path = Path(directory) / "audit.config"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(TEST06_AUDIT_CONFIG)
    return path


def read_detail(log_dir: Path) -> tuple[str | None, bool | None]:
    """(effective scenario, whether an audit.config was read) from LoadGen's mlperf_log_detail.txt."""
    if not (log_dir / DETAIL_FILE).is_file():
        return None, None
    scenario, audited = None, False
    for record in records(log_dir):
        if record.get("key") == "effective_scenario":
            scenario = str(record.get("value")).replace(" ", "")
        audited = audited or "Found Audit Config file" in str(record.get("value"))
    return scenario, audited


def describe(failures: list[str], total: int, ok: str) -> str:
    if not failures:
        return ok
    more = f"; {len(failures) - 3} more" if len(failures) > 3 else ""
    return f"{len(failures)} of {total} entries: " + "; ".join(failures[:3]) + more


def check_first_tokens(path: Path, entries: list[dict], outputs: list[np.ndarray], scenario: str) -> Check:
    name = "first token check"
    if scenario == "Offline":
        return Check(name, None, "Offline reports no first tokens")
    failures = []
    for i, (entry, data) in enumerate(zip(entries, outputs)):
        where = f"entry {i} (qsl_idx {entry['qsl_idx']})"
        if "token_data" not in entry:
            failures.append(f"{where} has no token_data (LoadGen writes it with use_token_latencies=1 outside Offline)")
            continue
        first = decode_tokens(path, i, entry, "token_data")
        if len(first) == 0 or len(first) > len(data) or not np.array_equal(data[:len(first)], first):
            failures.append(f"{where} first token {first.tolist()[:4]} but output starts {data.tolist()[:4]}")
    return Check(name, not failures, describe(failures, len(entries), "every first token starts its output"))


def check_eos(entries: list[dict], outputs: list[np.ndarray], eos_ids: tuple[int, ...]) -> Check:
    failures = []
    for i, (entry, data) in enumerate(zip(entries, outputs)):
        trailing = 0
        while trailing < len(data) - 1 and data[len(data) - 1 - trailing] in eos_ids:
            trailing += 1
        if trailing >= 2:
            failures.append(f"entry {i} (qsl_idx {entry['qsl_idx']}) ends with {trailing} EOS tokens")
    ok = f"no output ends in more than one EOS {list(eos_ids)}"
    if not eos_ids:
        return Check("EOS check", None, "the model has no EOS token")
    if not any(np.isin(data, eos_ids).any() for data in outputs):
        ok += "; no output contains one at all: check that these are the model's EOS ids"
    return Check("EOS check", not failures, describe(failures, len(entries), ok))


def check_lengths(entries: list[dict], outputs: list[np.ndarray]) -> Check:
    failures = []
    for i, (entry, data) in enumerate(zip(entries, outputs)):
        where = f"entry {i} (qsl_idx {entry['qsl_idx']})"
        if "token_count" not in entry:
            failures.append(f"{where} has no token_count (LoadGen writes it with use_token_latencies=1)")
        elif int(entry["token_count"]) != len(data):
            failures.append(f"{where} has {len(data)} tokens but token_count {entry['token_count']}")
    return Check("sample length check", not failures,
                 describe(failures, len(entries), "every output has token_count tokens"))


def check_test06(log_dir: str | Path, scenario: str | None = None, eos_ids: tuple[int, ...] = LLAMA3_EOS) -> Test06Result:
    """Run TEST06's three checks on log_dir/mlperf_log_accuracy.json.

    scenario: as run; when None it is read from log_dir/mlperf_log_detail.txt."""
    log_dir = Path(log_dir)
    if not log_dir.is_dir():
        raise FileNotFoundError(f"log directory {log_dir} does not exist")
    logged_scenario, audited = read_detail(log_dir)
    scenario = scenario or logged_scenario
    if scenario is None:
        raise ValueError(f"no mlperf_log_detail.txt with effective_scenario in {log_dir}: give --scenario")
    if scenario not in LOADGEN_SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}: one of {', '.join(LOADGEN_SCENARIOS)}")
    path = log_dir / "mlperf_log_accuracy.json"
    entries = read_log(path)
    result = Test06Result(path, scenario, len(entries), audited=audited)
    if not entries:
        result.checks = [Check(n, False, "no responses were logged: run under TEST06's audit.config")
                         for n in ("first token check", "EOS check", "sample length check")]
        return result
    outputs = [decode_tokens(path, i, e) for i, e in enumerate(entries)]
    result.checks = [check_first_tokens(path, entries, outputs, scenario), check_eos(entries, outputs, eos_ids),
                     check_lengths(entries, outputs)]
    return result
