"""TEST06: the three checks on hand-built logs, and a real LoadGen run under TEST06's audit.config."""
import json

import mlperf_loadgen as lg
import numpy as np
import pytest

from llmbench.cli.main import main as llmbench
from llmbench.coordinator.scoring import compliance

EOS = 128009


def hexed(ids):
    return np.asarray(ids, "<i4").tobytes().hex().upper()


def entry(i, ids, first=None, count=None):
    e = {"seq_id": i, "qsl_idx": i, "data": hexed(ids), "token_count": len(ids) if count is None else count}
    if first is not False:
        e["token_data"] = hexed(ids[:1] if first is None else first)
    return e


def clean_entries():
    return [entry(0, [11, 12, 13, EOS]), entry(1, [21, 22]), entry(2, [EOS]), entry(3, [EOS, EOS]), entry(4, [31, EOS])]


# The line LoadGen 6.0.17 logs when it reads an audit.config (as in the real run below).
AUDIT_RECORD = {"key": "warning_generic_message", "time_ms": 0.03, "namespace": "mlperf::logging",
                "value": "Found Audit Config file (audit.config). Overriding TestSettings from audit.config file."}


def write(tmp_path, entries, scenario=None, audited=True, detail=True):
    """The accuracy log, and a detail log (unless detail=False) with LoadGen's audit line (unless
    audited=False) and the effective scenario (if given)."""
    (tmp_path / "mlperf_log_accuracy.json").write_text(json.dumps(entries))
    records = [AUDIT_RECORD] if audited else []
    records += [{"key": "effective_scenario", "value": scenario, "time_ms": 0.1}] if scenario else []
    if detail:
        (tmp_path / "mlperf_log_detail.txt").write_text("".join(f":::MLLOG {json.dumps(r)}\n" for r in records))
    return tmp_path


def verdicts(result):
    return [c.passed for c in result.checks]


def test_clean_log_passes(tmp_path):
    result = compliance.check_test06(write(tmp_path, clean_entries()), "Server")
    assert verdicts(result) == [True, True, True] and result.passed
    assert "TEST06: PASS" in result.report()
    assert result.verify_accuracy_txt().endswith("TEST06 verification complete\n")


@pytest.mark.parametrize("bad, failing, words", [
    (entry(5, [41, 42, EOS], first=[40]), 0, "first token [40] but output starts [41, 42, 128009]"),
    (entry(5, [41, 42, EOS], first=[]), 0, "first token []"),
    (entry(5, [41, 42, EOS], first=False), 0, "has no token_data"),
    (entry(5, [41, EOS, EOS]), 1, "ends with 2 EOS tokens"),
    (entry(5, [EOS, EOS, EOS]), 1, "ends with 2 EOS tokens"),
    (entry(5, [41, 42, 43], count=2), 2, "has 3 tokens but token_count 2"),
])
def test_each_violation_is_caught(tmp_path, bad, failing, words):
    result = compliance.check_test06(write(tmp_path, clean_entries() + [bad]), "Server")
    expected = [True, True, True]
    expected[failing] = False
    assert verdicts(result) == expected and not result.passed
    assert words in result.checks[failing].detail and "entry 5 (qsl_idx 5)" in result.checks[failing].detail
    assert "TEST06: FAIL" in result.report()
    assert result.verify_accuracy_txt().endswith("TEST06 verification failed\n")


def test_offline_skips_first_token_check_and_eos_is_configurable(tmp_path):
    entries = [entry(0, [1, 2, 2], first=[9]), entry(1, [3, 2], first=False)]
    offline = compliance.check_test06(write(tmp_path, entries), "Offline")
    assert verdicts(offline) == [None, True, True] and offline.passed
    assert "First token check pass: Skipped" in offline.verify_accuracy_txt()
    assert verdicts(compliance.check_test06(tmp_path, "Offline", eos_ids=(2,))) == [None, False, True]
    no_eos = compliance.check_test06(tmp_path, "Offline", eos_ids=(7,))
    assert no_eos.passed and "no output contains one at all" in no_eos.checks[1].detail
    assert verdicts(compliance.check_test06(tmp_path, "Offline", eos_ids=())) == [None, None, True]


def test_scenario_comes_from_the_detail_log(tmp_path):
    write(tmp_path, [entry(0, [5, 6], first=[7])], scenario="Server", audited=False)
    with open(tmp_path / "mlperf_log_detail.txt", "a") as detail:
        detail.write(':::MLLOG {"key": "effective_mode", "val\n')  # a line cut short
    result = compliance.check_test06(tmp_path)
    assert result.scenario == "Server" and result.audited is False
    offline = compliance.check_test06(tmp_path, "Offline")  # --scenario wins
    assert offline.scenario == "Offline" and verdicts(offline) == [None, True, True]
    assert not offline.passed  # every check passes, but this is not a TEST06 run
    assert "LoadGen read no audit.config for this run, so it is not a TEST06 run" in offline.report()
    assert offline.report().endswith("TEST06: FAIL")
    (tmp_path / "mlperf_log_detail.txt").unlink()
    with pytest.raises(ValueError, match="give --scenario"):
        compliance.check_test06(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        compliance.check_test06(tmp_path / "nowhere", "Server")
    with pytest.raises(ValueError, match="unknown scenario"):
        compliance.check_test06(tmp_path, "Online")


def test_no_detail_log_cannot_confirm_the_audit(tmp_path, capsys):
    """Clean entries but no mlperf_log_detail.txt: nothing shows the run was under the audit.config."""
    write(tmp_path, clean_entries(), detail=False)
    result = compliance.check_test06(tmp_path, "Server")
    assert verdicts(result) == [True, True, True] and result.audited is None and not result.passed
    assert "the audit cannot be confirmed: no mlperf_log_detail.txt" in result.report()
    assert result.report().endswith("TEST06: FAIL")
    assert result.verify_accuracy_txt().endswith("TEST06 verification failed\n")
    assert llmbench(["compliance", "test06", "--log-dir", str(tmp_path), "--scenario", "Server"]) == 1
    printed = capsys.readouterr().out
    assert "the audit cannot be confirmed" in printed and "TEST06: FAIL" in printed and "TEST06: PASS" not in printed


def test_no_logged_responses_fails(tmp_path):
    result = compliance.check_test06(write(tmp_path, []), "Server")
    assert not result.passed and "run under TEST06's audit.config" in result.report()


def run_loadgen(outdir, scenario, response):
    """A real LoadGen performance run under TEST06's audit.config, answered by response(sample_index)."""
    audit = compliance.write_audit_config(outdir / "audit")
    keep = []

    def issue(samples):
        for s in samples:
            ids = np.asarray(response(s.index), np.int32)
            keep.append(ids)
            if scenario == "Server":
                lg.FirstTokenComplete([lg.QuerySampleResponse(s.id, ids.ctypes.data, 4, 1)])
            lg.QuerySamplesComplete([lg.QuerySampleResponse(s.id, ids.ctypes.data, ids.nbytes, len(ids))])

    settings = lg.TestSettings()
    settings.scenario = getattr(lg.TestScenario, scenario)
    settings.mode = lg.TestMode.AccuracyOnly  # the audit.config turns this into a performance run
    settings.use_token_latencies = True
    settings.server_target_qps = 500
    settings.offline_expected_qps = 500
    settings.min_duration_ms = 60_000  # the audit.config's min_duration = 0 makes it short
    log = lg.LogSettings()
    log.log_output.outdir = str(outdir)
    log.log_output.copy_summary_to_stdout = False
    sut = lg.ConstructSUT(issue, lambda: None)
    qsl = lg.ConstructQSL(10, 10, lambda samples: None, lambda samples: None)
    try:
        lg.StartTestWithLogSettings(sut, qsl, settings, log, str(audit))
    finally:
        lg.DestroyQSL(qsl)
        lg.DestroySUT(sut)


@pytest.mark.parametrize("scenario", ["Server", "Offline"])
def test_real_loadgen_run_under_audit_config(tmp_path, scenario, capsys):
    run_loadgen(tmp_path, scenario, lambda i: [100 + i, 5, 6, EOS])
    logged = json.loads((tmp_path / "mlperf_log_accuracy.json").read_text())
    assert len(logged) >= 50 and all("token_count" in e for e in logged)
    assert all(("token_data" in e) == (scenario == "Server") for e in logged)
    assert llmbench(["compliance", "test06", "--log-dir", str(tmp_path), "--output-dir", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert f"({scenario}," in printed and "TEST06: PASS" in printed and "no audit.config" not in printed
    assert (tmp_path / "out" / "verify_accuracy.txt").read_text().endswith("TEST06 verification complete\n")
    assert compliance.read_detail(tmp_path) == (scenario, True)  # LoadGen's own audit line, as AUDIT_RECORD
    (tmp_path / "mlperf_log_detail.txt").unlink()  # the real log, its proof of the audit gone
    assert llmbench(["compliance", "test06", "--log-dir", str(tmp_path), "--scenario", scenario]) == 1
    assert "the audit cannot be confirmed" in capsys.readouterr().out


def test_real_loadgen_run_with_double_eos_fails(tmp_path, capsys):
    run_loadgen(tmp_path, "Server", lambda i: [100 + i, EOS, EOS])
    assert llmbench(["compliance", "test06", "--log-dir", str(tmp_path)]) == 1
    assert "EOS check:             FAIL" in capsys.readouterr().out


def test_write_audit_config_cli(tmp_path, capsys):
    assert llmbench(["compliance", "test06", "--write-audit-config", str(tmp_path)]) == 0
    text = (tmp_path / "audit.config").read_text()
    assert text == compliance.TEST06_AUDIT_CONFIG and "*.*.accuracy_log_sampling_target = 100" in text
    assert "audit_config_filename" in capsys.readouterr().out
