"""Build a submission from run folders: read them, plan the results (or refuse), describe the system,
write the tree."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from llmbench.coordinator.submission import plan as planning, run_folder, system_desc, tree
from llmbench.coordinator.submission.plan import Plan

DIVISIONS = ("closed", "open")
SHOWN = 3  # reasons named in the one line of a refusal


@dataclass
class Request:
    submitter: str
    system: str  # the system's id: systems/<system>.json, results/<system>/
    division: str
    runs: list[Path]
    output: Path
    system_file: Path | None = None
    status: str | None = None
    system_name: str | None = None
    allow_demo: bool = False  # build a practice tree from demo-scaled runs


@dataclass
class Built:
    plan: Plan
    org: Path  # output/<division>/<submitter>
    notes: list[str]


def _check_names(req: Request) -> None:
    if req.division not in DIVISIONS:
        raise ValueError(f"--division {req.division}: one of {', '.join(DIVISIONS)}")
    for flag, value in (("--submitter", req.submitter), ("--system", req.system)):
        if not value or "/" in value or value.startswith("."):
            raise ValueError(f"{flag} {value!r}: a folder name (no '/', not starting with '.')")


def demo_note(reasons: list[str]) -> str:
    if not reasons:
        return ""
    return ("**Not a valid MLPerf submission**: built with --allow-demo from runs whose settings are not MLPerf's: "
            + "; ".join(reasons) + ".")


def build(req: Request) -> Built:
    _check_names(req)
    runs = [run_folder.read(path) for path in req.runs]
    plan = planning.plan(runs, req.division)
    if plan.demo_reasons and not req.allow_demo:
        shown = "; ".join(plan.demo_reasons[:SHOWN])
        more = f"; and {len(plan.demo_reasons) - SHOWN} more" if len(plan.demo_reasons) > SHOWN else ""
        raise ValueError(f"these runs are not at MLPerf's settings ({shown}{more}): rerun them with "
                         f"--mlperf-settings, or pass --allow-demo for a practice tree the checker will refuse")
    given = system_desc.read_given(req.system_file)
    if req.status is not None:
        given["status"] = req.status
    system = system_desc.describe(plan, division=req.division, submitter=req.submitter,
                                  system_name=req.system_name or given.get("system_name") or req.system, given=given)
    org = tree.write(plan, system, req.output, system_id=req.system, demo_note=demo_note(plan.demo_reasons))
    notes = [f"{r.scenario}: accuracy FAIL in {r.accuracy.path} (the checker will refuse it)"
             for r in plan.results if r.accuracy.accuracy_passed is False]
    scenarios = {r.scenario for r in plan.results}
    wanted = planning.REQUIRED_SCENARIOS[plan.benchmark.name]
    for need in wanted:
        if not scenarios & set(need):
            notes.append(f"no {' or '.join(need)} result: the checker requires it for {plan.benchmark.name}")
    return Built(plan, org, notes)
