"""--find-peak: the bisection against a device of known capacity, its refusals, and a real search
(`llmbench run`, simulated agents, real LoadGen) that ends in a confirmed VALID rate."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from llmbench.coordinator.run import find_peak
from llmbench.coordinator.loadgen.summary import Summary
from cli_processes import error_of, llmbench


def summary(result: str, scenario: str, rate: float, ttft_ms: float | None, tpot_ms: float | None) -> Summary:
    return Summary(path=Path("x"), result=result, scenario=scenario, mode="PerformanceOnly", samples_per_s=rate,
                   tokens_per_s=None, target_qps=None, ttft_p99_ms=ttft_ms, tpot_p99_ms=tpot_ms,
                   ttft_limit_ms=500.0, tpot_limit_ms=30.0, problems=[])


def device(capacity: float, confirm_margin: float = 0.98):
    """A scenario that holds its limits up to `capacity` QPS; LoadGen's longer run is VALID only up to
    capacity * confirm_margin (early stopping wants headroom)."""
    runs = []

    def run_at(kind: str, qps: float | None) -> find_peak.Trial:
        runs.append((kind, qps))
        if qps is None:
            return find_peak.Trial(capacity * 1.1, kind, summary("VALID", "Offline", capacity * 1.1, None, None))
        over = qps > capacity
        valid = qps <= capacity * (confirm_margin if kind == "confirm" else 1)
        return find_peak.Trial(qps, kind, summary("VALID" if valid else "INVALID", "Server", min(qps, capacity),
                                                  5000.0 if over else 120.0, 45.0 if over else 20.0))
    return run_at, runs


@pytest.mark.parametrize("capacity", [3.7, 48.0, 410.0])
def test_the_search_brackets_the_capacity_then_confirms_below_it(capacity):
    run_at, runs = device(capacity)
    peak = find_peak.search(run_at, None, say=lambda _: None)
    assert runs[0] == ("offline", None)
    assert sum(kind == "probe" for kind, _ in runs) <= find_peak.MAX_PROBES
    assert peak.qps is not None and capacity * 0.9 <= peak.qps <= capacity * 0.98
    assert runs[-1] == ("confirm", peak.qps)
    assert all(q <= capacity for kind, q in runs if kind == "probe" and q in [t.qps for t in peak.trials if t.passes])
    lines = peak.lines()
    assert lines[0].startswith("| run | target QPS |") and lines[-1] == f"Peak: {peak.qps:g} QPS VALID (Server)"
    assert len(lines) == 2 + len(runs) + 2


def test_a_start_below_capacity_grows_until_a_probe_fails():
    run_at, runs = device(40.0)
    peak = find_peak.search(run_at, 5.0, say=lambda _: None)
    probes = [q for kind, q in runs if kind == "probe"]
    assert probes[:5] == [5.0, 7.5, 11.2, 16.8, 25.2] and "offline" not in [k for k, _ in runs]
    assert peak.qps is not None and 36 <= peak.qps <= 39.2


def test_no_rate_confirmed_is_no_peak():
    run_at, _ = device(0.5, confirm_margin=0.0)  # every probe over the limits, nothing ever VALID
    peak = find_peak.search(run_at, 10.0, say=lambda _: None)
    assert peak.qps is None and peak.lines()[-1].startswith("Peak: none found")


@pytest.mark.parametrize("flags, message", [
    (["--scenario", "Offline"], "--find-peak searches a Server or Interactive performance run (no --mode "
                                "accuracy, no --compliance)"),
    (["--benchmark", "llama3.1-8b-edge"], "--find-peak searches a Server or Interactive performance run (no --mode "
                                          "accuracy, no --compliance)"),  # its SingleStream has no latency limits
    (["--mode", "accuracy"], "--find-peak searches a Server or Interactive performance run (no --mode accuracy, "
                             "no --compliance)"),
    (["--peak-probe-duration", "0"], "--peak-probe-duration must be in (0, 86400] seconds, got 0.0"),
])
def test_find_peak_refuses_what_it_cannot_search(capsys, tmp_path, flags, message):
    assert error_of(capsys, "run", "--engine", "simulated", "--find-peak", "--output", tmp_path, *flags) == message


@pytest.mark.slow
def test_find_peak_through_the_mesh_ends_in_a_confirmed_valid_rate(tmp_path):
    out = tmp_path / "peak"
    done = llmbench("run", "--engine", "simulated", "--agents", "1", "--tokens-per-s", "2000", "--find-peak",
                    "--scenario", "Server", "--peak-probe-duration", "6", "--peak-confirm-duration", "15",
                    "--no-tui", "--progress", "0", "--output", out, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    table = (out / find_peak.PEAK_FILE).read_text()
    answer = re.search(r"^Peak: ([0-9.]+) QPS VALID \(Server\)$", table, re.MULTILINE)
    assert answer, table
    # One agent at 2000 tokens/s completes ~15 samples/s of 128 tokens; the peak is below that and
    # within the bracket the Offline probe set.
    offline = float(re.search(r"^\| offline \| ([0-9.]+) \|", table, re.MULTILINE).group(1))
    assert 0.5 * offline <= float(answer.group(1)) <= offline
    folders = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert "offline" in folders and any(f.startswith("confirm-") for f in folders)
    for folder in folders:
        assert (out / folder / "mlperf_log_summary.txt").is_file()
    assert f"Peak: {answer.group(1)} QPS VALID" in done.stdout
