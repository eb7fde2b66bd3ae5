"""`llmbench compliance test06`: MLPerf's TEST06 checks on a run's LoadGen logs.

Exit status 0 when every check passes on a run LoadGen's detail log shows was under the audit.config,
1 otherwise (a check failed, no audit.config read, or no mlperf_log_detail.txt to tell). With --write-audit-config DIR it only
writes TEST06's audit.config there, for a run made under it."""
from __future__ import annotations

import argparse
from pathlib import Path

from llmbench.coordinator.scoring import compliance
from llmbench.coordinator.run.outputs import VERIFY_FILE, writable_folder


def add_arguments(parser: argparse.ArgumentParser) -> None:
    tests = parser.add_subparsers(dest="test", metavar="TEST", required=True)
    test06 = tests.add_parser("test06", help="first token, trailing EOS and token_count checks",
                              description=compliance.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    target = test06.add_mutually_exclusive_group(required=True)
    target.add_argument("--log-dir", help="folder with the run's mlperf_log_accuracy.json and mlperf_log_detail.txt (the proof of the audit)")
    target.add_argument("--write-audit-config", metavar="DIR",
                        help="write TEST06's audit.config into DIR and exit")
    test06.add_argument("--scenario", choices=compliance.LOADGEN_SCENARIOS, default=None,
                        help="the run's scenario (default: read from mlperf_log_detail.txt)")
    test06.add_argument("--eos", type=int, nargs="+", default=list(compliance.LLAMA3_EOS),
                        help="EOS token id(s) (default: 128009, Llama 3.1)")
    test06.add_argument("--output-dir", default=None,
                        help="also write MLPerf's verify_accuracy.txt into this folder")


def run(args: argparse.Namespace) -> int:
    if args.write_audit_config:
        path = compliance.write_audit_config(writable_folder(Path(args.write_audit_config), "--write-audit-config"))
        print(f"wrote {path}: pass it to LoadGen as audit_config_filename (or run from {path.parent})")
        return 0
    if args.output_dir:
        writable_folder(Path(args.output_dir), "--output-dir")  # before the work, not after it
    result = compliance.check_test06(args.log_dir, args.scenario, tuple(args.eos))
    print(result.report())
    if args.output_dir:
        out = Path(args.output_dir) / VERIFY_FILE
        out.write_text(result.verify_accuracy_txt())
        print(f"wrote {out}")
    return 0 if result.passed else 1
