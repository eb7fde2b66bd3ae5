"""The TUI's fitting rules on their own: cuts, meters, the time axis, which columns fit."""
from __future__ import annotations

from llmbench.tui.fit import clock, columns_that_fit, cut, cut_left, meter, time_axis


def test_cuts_keep_the_width_and_mark_what_went():
    assert cut("short", 10) == "short" and cut("a long line", 6) == "a lon…" and cut("x", 0) == ""
    assert cut_left("/results/20250101-120000", 12) == "…0101-120000" and len(cut_left("abcdef" * 9, 20)) == 20


def test_meters_fill_to_the_fraction_and_clamp():
    assert meter(0.6, 5) == "███░░  60%" and meter(0.0, 4) == "░░░░   0%"
    assert meter(1.7, 4) == "████ 100%" and meter(None) == "-"


def test_time_axis_spans_the_width_with_its_ends_and_a_middle_where_it_fits():
    assert time_axis(0, 90, 30) == "0:00" + " " * 9 + "0:45" + " " * 9 + "1:30"  # the middle label centred
    assert time_axis(0, 90, 12) == "0:00    1:30" and time_axis(0, 3700, 5) == "1:01…"
    assert clock(3725) == "1:02:05" and clock(-3) == "0:00"


def test_columns_drop_in_their_order_until_the_rest_fit():
    widths = {"agent": 14, "state": 5, "node": 10, "KV": 10, "done": 4}
    order = tuple(widths)
    assert columns_that_fit(widths, order, ("node", "KV", "state"), 100) == order
    assert columns_that_fit(widths, order, ("node", "KV", "state"), 40) == ("agent", "state", "done")
    assert columns_that_fit(widths, order, ("agent", "node", "KV", "state", "done"), 10) == ("agent",)
