"""How many tokens the next step may hold so that running queries meet their time-per-output-token limit.

A decoding query gains one token per step, so its TPOT is the mean wall time of the steps it rides in.
Server and Interactive queries carry their scenario's TPOT limit; the scheduler then sizes each step's
prefill so the predicted step time stays under a share of the tightest limit among the decoding queries,
and prefill gets every token that leaves. Without a limit (Offline), steps take max_step_tokens.

The prediction is a line, step seconds = fixed + per_token x tokens, fitted by exponentially weighted least
squares over the steps this engine just ran on this device (decode steps give the small sizes, mixed steps
the large), so it follows the card, the precision and the context lengths without a hand-tuned
--max-step-tokens per scenario.
"""
from __future__ import annotations

# The limit holds at p99 over queries of each query's mean step time: aim the mean below it, leaving room
# for the prefill-heavy steps a query happens to ride in and for the fit's error.
HEADROOM = 0.7
DECAY = 0.98  # weight of past steps per new one: the fit follows the last ~50 steps
MIN_STEPS = 8  # steps seen before the fit is trusted (until then: max_step_tokens; later: the last fit's)
MIN_PREFILL = 64  # tokens prefill always gets once decode rows are in, so waiting queries start


class StepBudget:
    def __init__(self, max_tokens: int) -> None:
        self.max_tokens = max_tokens
        self._last = max_tokens  # the budget of the last fit, kept while no fit can be read
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

    def line(self) -> tuple[float, float] | None:
        """(fixed seconds, seconds per token), or None until the steps seen span enough sizes to fit it."""
        if self._n < MIN_STEPS:
            return None
        mx, my = self._x / self._w, self._y / self._w
        var = self._xx / self._w - mx * mx
        if var < 1.0:  # every step the same size: no slope to read
            return None
        slope = (self._xy / self._w - mx * my) / var
        if slope <= 0:
            return None
        return my - slope * mx, slope

    def tokens(self, decode_rows: int, tpot_limit_s: float) -> int:
        """The token budget of a step with decode_rows decoding queries whose tightest limit is tpot_limit_s
        (0: none)."""
        if tpot_limit_s <= 0:
            return self.max_tokens
        fit = self.line()
        if fit is not None:
            fixed, per_token = fit
            self._last = min(self.max_tokens, int((HEADROOM * tpot_limit_s - fixed) / per_token))
        return max(min(self.max_tokens, decode_rows + MIN_PREFILL), self._last)
