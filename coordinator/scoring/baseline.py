"""A run's accuracy judged against a baseline run of the same samples (our own float32 or bf16):
MLPerf's pass rule with the baseline in the reference's place (each ROUGE at least 99 % of the
baseline's, gen_len within 90-110 % of its), and how far the two runs' outputs agree token by token.

MLPerf judges a submission against its reference implementation's scores; a lower precision of our
own engine is judged the same way against a higher one, so what it costs shows apart from what the
model and the engine score."""
from __future__ import annotations

from dataclasses import dataclass

from llmbench.coordinator.scoring.accuracy import GEN_LEN_RANGE, ROUGE_FRACTION, ROUGE_KEYS, AccuracyResult, verdict


@dataclass(frozen=True)
class Agreement:
    samples: int
    identical: int  # samples whose outputs are the same token ids
    prefix_share: float  # mean over samples: leading ids in common / the longer output's length

    def line(self) -> str:
        return (f"outputs: {self.identical:,} of {self.samples:,} samples token-identical to the baseline's; "
                f"{100 * self.prefix_share:.1f} % of tokens agree before the first difference (mean per sample)")


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def agreement(run: dict[int, list[int]], baseline: dict[int, list[int]]) -> Agreement:
    """Token agreement of two runs' outputs by sample; both must cover the same samples."""
    if run.keys() != baseline.keys():
        only_run, only_base = len(run.keys() - baseline.keys()), len(baseline.keys() - run.keys())
        raise ValueError(f"the log and the baseline log are not of the same samples: {only_run} only in the log, "
                         f"{only_base} only in the baseline (same dataset and --max-samples for both runs?)")
    shares = [_common_prefix(run[i], baseline[i]) / max(len(run[i]), len(baseline[i]), 1) for i in run]
    return Agreement(samples=len(run), identical=sum(run[i] == baseline[i] for i in run),
                     prefix_share=sum(shares) / len(shares) if shares else 0.0)


@dataclass
class BaselineComparison:
    run: AccuracyResult
    baseline: AccuracyResult
    baseline_log: str  # where the baseline's accuracy log is, as given
    agreement: Agreement

    def shares(self) -> dict[str, float | None]:
        """Each ROUGE and gen_len as a share of the baseline's (None where the baseline's is 0)."""
        keys = (*ROUGE_KEYS, "gen_len")
        return {key: getattr(self.run, key) / getattr(self.baseline, key) if getattr(self.baseline, key) else None
                for key in keys}

    def checks(self) -> dict[str, bool]:
        shares = self.shares()
        passed = {key: shares[key] is not None and shares[key] >= ROUGE_FRACTION for key in ROUGE_KEYS}
        gen_len = shares["gen_len"]
        passed["gen_len"] = gen_len is not None and GEN_LEN_RANGE[0] <= gen_len <= GEN_LEN_RANGE[1]
        return passed

    @property
    def passed(self) -> bool:
        return all(self.checks().values())

    def table(self) -> str:
        shares, checks = self.shares(), self.checks()
        rows = [f"{'metric':<10} {'value':>12} {'baseline':>12} {'share':>9}  {'rule':<14} result"]
        for key in (*ROUGE_KEYS, "gen_len"):
            share = shares[key]
            rule = f">= {100 * ROUGE_FRACTION:.0f} %" if key != "gen_len" else \
                f"{100 * GEN_LEN_RANGE[0]:.0f}-{100 * GEN_LEN_RANGE[1]:.0f} %"
            value = f"{getattr(self.run, key):>12.4f} {getattr(self.baseline, key):>12.4f}" if key != "gen_len" else \
                f"{self.run.gen_len:>12,} {self.baseline.gen_len:>12,}"
            rows.append(f"{key:<10} {value} {'-' if share is None else f'{100 * share:.2f} %':>9}  {rule:<14} "
                        f"{verdict(checks[key])}")
        return "\n".join([f"against the baseline {self.baseline_log} (MLPerf's rule with the baseline's scores "
                          f"in the reference's place, {self.agreement.samples:,} samples)", *rows,
                          self.agreement.line(), f"against the baseline: {verdict(self.passed)}"])

    def to_json(self) -> dict:
        a = self.agreement
        return {"log": self.baseline_log, **self.baseline.to_json(), "share": self.shares(), "passed": self.passed,
                "identical_outputs": a.identical, "samples": a.samples, "token_prefix_share": a.prefix_share}
