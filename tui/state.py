"""What the TUI keeps between RunStatus messages: the latest one, the throughput history and the log.

Messages carry only the throughput points and log lines their stream had not sent; applying one is
idempotent (points by time, lines by number), so a re-connected stream that repeats itself is fine.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from llmbench.proto import pb

HISTORY_POINTS = 600  # sparkline history; the newest ones
LOG_LINES = 2000


@dataclass
class RunView:
    status: pb.RunStatus | None = None
    tokens_per_s: deque = field(default_factory=lambda: deque(maxlen=HISTORY_POINTS))
    samples_per_s: deque = field(default_factory=lambda: deque(maxlen=HISTORY_POINTS))
    times: deque = field(default_factory=lambda: deque(maxlen=HISTORY_POINTS))  # each point's elapsed_s: the axis
    log: deque = field(default_factory=lambda: deque(maxlen=LOG_LINES))
    fresh_lines: list[str] = field(default_factory=list)  # for the log pane, taken by take_lines()
    _last_point_s: float = float("-inf")
    _lines_seen: int = 0

    def apply(self, msg: pb.RunStatus) -> None:
        if self.status is not None and msg.run_id != self.status.run_id:
            self.__init__()  # another run: nothing of the last one applies
        self.status = msg
        for p in msg.throughput:
            if p.elapsed_s > self._last_point_s:
                self._last_point_s = p.elapsed_s
                self.tokens_per_s.append(p.tokens_per_s)
                self.samples_per_s.append(p.samples_per_s)
                self.times.append(p.elapsed_s)
        for number, line in enumerate(msg.log_lines, start=msg.log_seq):
            if number > self._lines_seen:
                self._lines_seen = number
                self.log.append(line)
                self.fresh_lines.append(line)

    def take_lines(self) -> list[str]:
        lines, self.fresh_lines = self.fresh_lines, []
        return lines
