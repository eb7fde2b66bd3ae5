"""`llmbench submission`: build an MLPerf submission tree from run folders, and/or run MLCommons'
submission checker on one.

    llmbench submission --submitter ORG --system NAME [--division closed|open] RUN_DIR... --output DIR
    llmbench submission --check TOOLS_DIR --output DIR          (check a tree built earlier)

Per scenario it takes a performance run, its accuracy run (--mode accuracy) and, for llama3.1-8b in the
closed division, its TEST06 run (--compliance TEST06). Exit status: 0 built (and, with --check, the
checker found no errors), 1 the checker found errors, 2 refused (one line saying why).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from llmbench.coordinator.submission import build as builder, checker, system_desc


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.description = __doc__
    parser.add_argument("runs", nargs="*", metavar="RUN_DIR", type=Path,
                        help="llmbench run folders (each with run.json and LoadGen's logs)")
    parser.add_argument("--output", required=True, type=Path,
                        help="the submission tree to write (a new folder), or with --check alone, to check")
    parser.add_argument("--submitter", help="the submitting organisation: DIVISION/ORG/ in the tree")
    parser.add_argument("--system", help="the system's id: systems/NAME.json and results/NAME/")
    parser.add_argument("--division", choices=builder.DIVISIONS, default="closed", help="default: closed")
    parser.add_argument("--system-file", type=Path, default=None,
                        help="JSON object of MLCommons system fields llmbench cannot detect (cooling, storage, "
                             "networking, interconnects, status, ...); they also override detected ones")
    parser.add_argument("--status", choices=system_desc.STATUSES, default=None,
                        help="the system's availability (or \"status\" in --system-file)")
    parser.add_argument("--system-name", default=None, help="the system's descriptive name (default: NAME)")
    parser.add_argument("--allow-demo", action="store_true",
                        help="build from demo-scaled runs anyway: a practice tree, marked as such, that the "
                             "checker will refuse")
    parser.add_argument("--check", type=Path, metavar="TOOLS_DIR", default=None,
                        help="run MLCommons' submission checker (mlcommons/inference tools/submission) on the tree")
    parser.add_argument("--checker-version", default=checker.DEFAULT_VERSION,
                        help=f"MLPerf version for the checker (default {checker.DEFAULT_VERSION})")


def _build(args: argparse.Namespace) -> None:
    for flag in ("submitter", "system"):
        if not getattr(args, flag):
            raise ValueError(f"--{flag} is required to build a submission")
    built = builder.build(builder.Request(
        submitter=args.submitter, system=args.system, division=args.division, runs=args.runs, output=args.output,
        system_file=args.system_file, status=args.status, system_name=args.system_name, allow_demo=args.allow_demo))
    print(f"wrote {built.org}: {len(built.plan.results)} {built.plan.benchmark.name} result(s), "
          f"{', '.join(r.scenario for r in built.plan.results)}")
    if built.plan.demo_reasons:
        print("not a valid submission (--allow-demo): " + "; ".join(built.plan.demo_reasons))
    for note in built.notes:
        print(f"note: {note}")


def run(args: argparse.Namespace) -> int:
    if args.runs:
        _build(args)
    elif args.check is None:
        raise ValueError("give RUN_DIRs to build a submission, or --check TOOLS_DIR to check the tree at --output")
    if args.check is None:
        return 0
    if not args.output.is_dir():
        raise ValueError(f"--output {args.output}: no submission tree there to check")
    verdict = checker.run(args.check, args.output, args.checker_version)
    print("\n".join(verdict.summary_lines()))
    return 0 if verdict.exit_code == 0 else 1
