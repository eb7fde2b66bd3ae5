"""Slow or hung: one rule for the agent's own health and for the coordinator's re-dispatch.

An engine that has had work and finished no step for stall_s is hung, unless a step is under way that
has not yet run HUNG_FACTOR times the slowest step the engine has finished (its warm-up included). A
real model on a few CPU cores, or a long prefill on a loaded device, is slow, not hung: re-dispatching
its queries would only start the same work again while it is still being computed. A wedged kernel
shows as a step under way that never ends, so it is still caught, only later.
"""
from __future__ import annotations

__all__ = ["HUNG_FACTOR", "hung"]

HUNG_FACTOR = 10.0


def hung(idle_s: float, step_running_s: float, slowest_step_s: float, stall_s: float) -> str | None:
    """Why the engine is hung, or None while it is working. idle_s: seconds with work and no step finished;
    step_running_s: how long the step under way has run (0: none)."""
    if idle_s <= stall_s:
        return None
    if step_running_s <= 0:
        return f"no step for {stall_s:g} s with queries in flight and none under way (engine hung)"
    limit = max(stall_s, HUNG_FACTOR * slowest_step_s)
    if step_running_s <= limit:
        return None
    return (f"a step under way for {step_running_s:.1f} s, past {limit:g} s "
            f"({HUNG_FACTOR:g}x the slowest step, {slowest_step_s:.2f} s, or the stall timeout) (engine hung)")
