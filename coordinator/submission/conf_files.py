"""A result's mlperf.conf and user.conf.

mlperf.conf: LoadGen 6.x runs on the copy built into it; the submission gets that same text, read out of
the installed LoadGen library, which must be the version the runs logged.
user.conf: the settings the performance run asked LoadGen for (its detail log's requested_* records)
where they differ from mlperf.conf, as user.conf lines for the run's mlperf.conf model and scenario:
LoadGen reading mlperf.conf and then this user.conf gets the run's settings back.
"""
from __future__ import annotations

import mlperf_loadgen as lg

from llmbench.common.host_info import package_version
from llmbench.coordinator.submission.run_folder import RunFolder

CONF_START = b"# The format of this config file is 'key = value'."  # mlperf.conf's first line
# (TestSettings attribute, its user.conf key, factor from the logged value to the conf's unit)
CONF_KEYS = (
    ("offline_expected_qps", "target_qps", 1),
    ("server_target_qps", "target_qps", 1),
    ("single_stream_expected_latency_ns", "target_latency", 1e-6),  # ns in the log, ms in the conf
    ("min_duration_ms", "min_duration", 1),
    ("max_duration_ms", "max_duration", 1),
    ("min_query_count", "min_query_count", 1),
    ("max_query_count", "max_query_count", 1),
    ("performance_sample_count_override", "performance_sample_count_override", 1),
    ("use_token_latencies", "use_token_latencies", 1),
)


def mlperf_conf(loadgen_logged: str) -> str:
    """The mlperf.conf built into the installed LoadGen; loadgen_logged: the version the runs' logs name."""
    installed = package_version("mlcommons-loadgen")
    if not installed or not loadgen_logged.startswith(installed + " "):
        raise ValueError(f"the runs used LoadGen {loadgen_logged}, this machine has {installed}: build the "
                         f"submission where the runs were made (its mlperf.conf is the one built into LoadGen)")
    data = open(lg.__file__, "rb").read()
    start = data.find(CONF_START)
    if start < 0:
        raise ValueError(f"no mlperf.conf found inside {lg.__file__}")
    return data[start:data.index(b"\0", start)].decode()


def _conf_value(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.12g}"


def user_conf(run: RunFolder) -> str:
    """user.conf lines that turn mlperf.conf's settings into the ones `run` asked LoadGen for."""
    model, scenario = run.conf_model, run.detail["effective_scenario"]
    base = lg.TestSettings()
    base.scenario = getattr(lg.TestScenario, scenario)
    base.FromConfig("", model, scenario, 0)
    lines = [f"# user.conf of {run.command}", f"# (LoadGen's requested settings of {run.path.name} where "
             f"they differ from mlperf.conf's {model} {scenario})"]
    for attr, key, factor in CONF_KEYS:
        requested = run.detail.get(f"requested_{attr}")
        if requested is None or float(requested) == float(getattr(base, attr)):
            continue
        lines.append(f"{model}.{scenario}.{key} = {_conf_value(float(requested) * factor)}")
    return "\n".join(lines) + "\n"
