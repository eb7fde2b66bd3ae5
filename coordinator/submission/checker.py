"""Run MLCommons' submission checker on a tree, unmodified, and say which of its checks failed.

The checker logs messages, not which check each came from; so it runs in a child Python whose
BaseCheck.execute (the one method every check goes through) also prints one marked JSON line per
check: the check's class and method name, the result folder, passed or not. Its own output is kept
whole for the user.
"""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

DEFAULT_VERSION = "v6.1"
MARK = "@@llmbench-check "
TIMEOUT_S = 600.0
# Where the checker's package may be under TOOLS_DIR: a copy of mlcommons/inference's tools/submission,
# the folder above it, or a checkout of mlcommons/inference.
LAYOUTS = (".", "submission", "tools/submission")
HARNESS = f"""
import json, sys
from submission_checker.checks import base
run_check = base.BaseCheck.execute
def execute(self, check):
    row = {{"group": type(self).__name__, "check": check.__name__, "path": str(self.path)}}
    try:
        passed = bool(run_check(self, check))
    except BaseException:
        print({MARK!r} + json.dumps({{**row, "passed": False, "raised": True}}), flush=True)
        raise
    print({MARK!r} + json.dumps({{**row, "passed": passed}}), flush=True)
    return passed
base.BaseCheck.execute = execute
from submission_checker import main
sys.argv[0] = "submission_checker"
sys.exit(main.main())
"""


@dataclass(frozen=True)
class CheckRow:
    group: str  # the checker's class: PerformanceCheck, AccuracyCheck, SystemCheck, ...
    check: str  # its method: min_duration_check, ...
    path: str  # the result folder or file it looked at
    passed: bool

    @property
    def name(self) -> str:
        return f"{self.group}.{self.check}"


@dataclass
class Verdict:
    exit_code: int
    rows: list[CheckRow]
    output: str  # the checker's own log

    @property
    def failed(self) -> list[CheckRow]:
        return [r for r in self.rows if not r.passed]

    def summary_lines(self) -> list[str]:
        ok = "SUMMARY: submission looks OK" in self.output
        lines = [f"MLCommons' submission checker: {'submission looks OK' if ok else 'submission has errors'} "
                 f"({len(self.rows) - len(self.failed)} of {len(self.rows)} checks passed)"]
        lines += [f"  FAIL {r.name}  ({r.path})" for r in self.failed]
        errors = [line for line in self.output.splitlines() if " ERROR] " in line and "Checks failed" not in line]
        return lines + [f"  {line}" for line in errors]


def find(tools_dir: Path) -> Path:
    """The folder holding submission_checker/ under TOOLS_DIR."""
    for layout in LAYOUTS:
        folder = tools_dir / layout
        if (folder / "submission_checker" / "main.py").is_file():
            return folder.resolve()
    raise ValueError(f"--check {tools_dir}: no submission_checker/main.py there, nor in its "
                     f"{', '.join(LAYOUTS[1:])}/ (give a copy of mlcommons/inference's tools/submission)")


def run(tools_dir: Path, tree: Path, version: str = DEFAULT_VERSION) -> Verdict:
    """The checker's verdict on the submission tree at `tree` (the folder holding closed/ or open/)."""
    folder = find(tools_dir)
    csv = tree.parent / f".{tree.name}-summary.csv"  # the checker's CSV, outside the tree it checks
    try:
        done = subprocess.run([sys.executable, "-c", HARNESS, "--input", str(tree.resolve()), "--version", version,
                               "--csv", str(csv.resolve())], cwd=folder, capture_output=True, text=True,
                              timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise ValueError(f"MLCommons' checker did not finish within {TIMEOUT_S:g} s") from None
    finally:
        csv.unlink(missing_ok=True)
    rows, log = [], []
    for line in (done.stdout + done.stderr).splitlines():
        if line.startswith(MARK):
            r = json.loads(line[len(MARK):])
            rows.append(CheckRow(r["group"], r["check"], r["path"], r["passed"]))
        else:
            log.append(line)
    if "ModuleNotFoundError" in done.stderr:
        missing = done.stderr.strip().splitlines()[-1]
        raise ValueError(f"MLCommons' checker cannot start: {missing} (it needs PyYAML and numpy)")
    return Verdict(done.returncode, rows, "\n".join(log))
