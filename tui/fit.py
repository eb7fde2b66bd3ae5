"""Text that fits a width: cut with an ellipsis, meters, a time axis, and which table columns fit.

Pure functions of strings and numbers (no Textual), so the app's layout rules are tested on their own.
"""
from __future__ import annotations

ELLIPSIS = "…"
METER_FULL, METER_EMPTY = "█", "░"


def cut(text: str, width: int) -> str:
    """text, or its start and an ellipsis when longer than width."""
    if len(text) <= width:
        return text
    return text[:max(width - 1, 0)] + ELLIPSIS if width > 0 else ""


def cut_left(text: str, width: int) -> str:
    """text, or an ellipsis and its end (a path's last folders say more than its first)."""
    if len(text) <= width:
        return text
    return ELLIPSIS + text[len(text) - width + 1:] if width > 1 else cut(text, width)


def meter(fraction: float | None, width: int = 8) -> str:
    """A bar of `width` cells filled to fraction (clamped to 0..1) and its percentage; '-' when unknown."""
    if fraction is None:
        return "-"
    fraction = min(max(fraction, 0.0), 1.0)
    filled = round(fraction * width)
    return f"{METER_FULL * filled}{METER_EMPTY * (width - filled)} {fraction * 100:3.0f}%"


def clock(seconds: float) -> str:
    """m:ss, or h:mm:ss from an hour on."""
    seconds = max(int(round(seconds)), 0)
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


def time_axis(start_s: float, end_s: float, width: int) -> str:
    """A line under a sparkline of `width` cells: the elapsed time at its left end, middle and right end
    (the middle only where it fits with room to spare)."""
    left, right = clock(start_s), clock(end_s)
    if width < len(left) + len(right) + 1:
        return cut(right, width)
    middle = clock((start_s + end_s) / 2)
    gap = width - len(left) - len(right)
    if gap >= 2 * len(middle) + 4:
        before = (gap - len(middle)) // 2
        return f"{left}{' ' * before}{middle}{' ' * (gap - len(middle) - before)}{right}"
    return f"{left}{' ' * gap}{right}"


def columns_that_fit(widths: dict[str, int], order: tuple[str, ...], drop_first: tuple[str, ...], room: int,
                     padding: int = 2) -> tuple[str, ...]:
    """The columns of `order` to show in `room` cells: each takes its width plus padding; columns named in
    drop_first go first, in that order, until the rest fit (the first column always stays)."""
    shown = list(order)
    for name in drop_first:
        if sum(widths[c] + padding for c in shown) <= room:
            break
        if name in shown and name != order[0]:
            shown.remove(name)
    return tuple(shown)
