"""How many tokens the next step may hold, from what steps have cost on this device.

Two limits, each a step time. A decoding query gains one token per step, so its TPOT is the mean wall time
of the steps it rides in: Server and Interactive queries carry their scenario's TPOT limit, and a step may
take a share of the tightest limit among the queries decoding in it, prefill getting every token that
leaves. And no step may take longer than MAX_STEP_S, so a slow device (a real model on a few CPU cores)
still reports progress every few seconds instead of looking hung. Offline on a GPU meets neither: its
steps take max_step_tokens.

The prediction is a line, step seconds = fixed + per_token x tokens, fitted by exponentially weighted least
squares over the steps this engine just ran (decode steps give the small sizes, mixed steps the large),
so it follows the card, the precision and the context lengths without a hand-tuned --max-step-tokens per
scenario or device.
"""
from __future__ import annotations

# The TPOT limit holds at p99 over queries of each query's mean step time: steps aim at this share of it,
# the rest is room for the prefill-heavy steps a query rides in and for the fit's error. 0.85 was tried on
# an H100 (docs/perf.md v8) in a run that collapsed for another reason too; 0.7 stays until one measures it.
HEADROOM = 0.7
MAX_STEP_S = 5.0  # well inside the 60 s after which the agent and the coordinator call an engine hung
DECAY = 0.98  # weight of past steps per new one: the fit follows the last ~50 steps
MIN_STEPS = 8  # steps seen before the fit is trusted
FIRST_TOKENS = 512  # the budget until then (less where the timed warm-up says so): a few ms of a GPU's time
MIN_PREFILL = 64  # tokens prefill always gets once decode rows are in, so waiting queries start


class StepBudget:
    def __init__(self, max_tokens: int, headroom: float = HEADROOM) -> None:
        self.max_tokens = max_tokens
        self.headroom = headroom
        self._fit: tuple[float, float] | None = None  # the last good (fixed s, s per token)
        self._first = min(max_tokens, FIRST_TOKENS)  # the budget until the fit is read
        self._n = 0
        self._w = self._x = self._y = self._xx = self._xy = 0.0  # weighted sums of 1, tokens, s, tokens², tokens·s

    def observe(self, tokens: int, seconds: float) -> None:
        """One step's size and wall time."""
        d = DECAY
        self._n += 1
        self._w = d * self._w + 1
        self._x = d * self._x + tokens
        self._y = d * self._y + seconds
        self._xx = d * self._xx + tokens * tokens
        self._xy = d * self._xy + tokens * seconds
        if self._n >= MIN_STEPS:
            mx, my = self._x / self._w, self._y / self._w
            var = self._xx / self._w - mx * mx
            if var >= 1.0:  # steps of one size only: no slope to read, the last fit holds
                slope = (self._xy / self._w - mx * my) / var
                if slope > 0:
                    self._fit = my - slope * mx, slope

    def seed(self, tokens: int, seconds: float) -> None:
        """A timed warm-up of tokens in seconds: until the fit is read, steps take no more tokens than
        MAX_STEP_S holds at that rate, so the first steps of a slow device are not the ones that look hung."""
        if tokens > 0 and seconds > 0:
            self._first = max(1, min(self._first, int(MAX_STEP_S * tokens / seconds)))

    def line(self) -> tuple[float, float] | None:
        """(fixed seconds, seconds per token), None before the steps seen allowed a fit."""
        return self._fit

    def tokens(self, decode_rows: int, tpot_limit_s: float) -> int:
        """The token budget of a step with decode_rows decoding queries whose tightest TPOT limit is
        tpot_limit_s (0: none)."""
        least = min(self.max_tokens, decode_rows + MIN_PREFILL)
        if self._fit is None:
            return max(least, self._first)
        target = min(self.headroom * tpot_limit_s, MAX_STEP_S) if tpot_limit_s > 0 else MAX_STEP_S
        fixed, per_token = self._fit
        return max(least, min(self.max_tokens, int((target - fixed) / per_token)))
