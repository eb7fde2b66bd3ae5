"""The TUI at 80x24 and on a wide terminal (Textual's pilot): the header keeps what runs, the agent
tables show the columns that fit, log lines wrap, and nothing scrolls or spills past the screen's edge."""
from __future__ import annotations

import pytest

from llmbench.tui.app import RunApp
from test_tui_app import ScriptedSource, deliver, log_lines, run, status

LONG_DIR = "/home/someone/llmbench/results/20250101-120000-server-demo"
BLOCKS = set("▁▂▃▄▅▆▇█")  # a scrollbar's thumb is drawn with these, two cells wide at a line's end
EVERY_COLUMN = ("agent", "state", "node", "device", "model", "KV used", "KV free", "memory used", "memory free",
                "run/wait", "tokens/s", "done", "in flight", "lost")
AT_80 = ("agent", "state", "KV used", "memory used", "run/wait", "tokens/s", "done")


def screen_lines(app: RunApp) -> list[str]:
    """The screen as drawn, one string per row (Textual keeps no public text export of it)."""
    return [strip.text for strip in app.screen._compositor.render_strips()]


def scrolling(app: RunApp) -> list[str]:
    shown = [app.screen, *(w for w in app.screen.walk_children() if w.region.area)]  # hidden views have none
    return [repr(w) for w in shown if w.show_vertical_scrollbar or w.show_horizontal_scrollbar]


def columns(app: RunApp, selector: str) -> tuple[str, ...]:
    return tuple(str(c.label) for c in app.query_one(selector).columns.values())


def check_fits(app: RunApp, width: int) -> None:
    lines = screen_lines(app)
    assert all(len(line) == width for line in lines)
    assert not scrolling(app), "\n".join(lines)
    assert not [line for line in lines if set(line[-2:]) <= BLOCKS], "\n".join(lines)


@pytest.mark.parametrize("size, header, compact, full", [
    ((80, 24), "llmbench · Server performance · phase loadgen · 0:03 elapsed", AT_80[:6] + ("done",), AT_80),
    ((200, 50), f"llmbench · Server performance · phase loadgen · 0:03 elapsed · results {LONG_DIR}",
     ("agent", "state", "KV used", "memory used", "run/wait", "tokens/s", "done", "in flight"), EVERY_COLUMN),
])
def test_every_view_fits_the_terminal(size, header, compact, full):
    width, _ = size
    long_line = "warning: " + "agent 10.0.0.1:50051 is slow to answer; " * 6 + "end"

    async def scenario():
        app = RunApp(ScriptedSource(), refresh_s=0.05, stay=True)
        async with app.run_test(size=size) as pilot:
            last = status(3, output_dir=LONG_DIR)
            last.log_lines[:] = [long_line]
            await deliver(pilot, app, status(1, output_dir=LONG_DIR), status(2, output_dir=LONG_DIR), last)
            lines = screen_lines(app)
            assert lines[0].strip() == header
            assert columns(app, "#agents-compact") == compact
            assert any(line.strip().startswith("10.0.0.2:50051  ready") for line in lines)  # both agents on screen
            axis = [line.strip() for line in lines if line.strip().startswith("0:01")]
            assert len(axis) == 2 and all(a.endswith("0:03") for a in axis)  # under each sparkline
            check_fits(app, width)
            await pilot.press("2")
            await pilot.pause(0.1)
            assert columns(app, "#agents-full") == full
            check_fits(app, width)
            await pilot.press("3")
            await pilot.pause(0.1)
            wrapped = log_lines(app)[2:]
            assert " ".join(wrapped).split() == long_line.split()  # wrapped at spaces, nothing cut
            assert len(wrapped) > 1 and all(len(line) <= width - 2 for line in wrapped)
            check_fits(app, width)
    run(scenario())


def test_the_header_cuts_the_results_path_from_the_left_and_keeps_the_rest():
    async def scenario():
        app = RunApp(ScriptedSource(), refresh_s=0.05, stay=True)
        async with app.run_test(size=(100, 24)) as pilot:
            await deliver(pilot, app, status(3, output_dir=LONG_DIR, elapsed_s=3725))
            head = screen_lines(app)[0].strip()
            assert head.startswith("llmbench · Server performance · phase loadgen · 1:02:05 elapsed · results …")
            assert head.endswith("120000-server-demo") and len(head) == 100 - 2
    run(scenario())
