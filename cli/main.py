import argparse
import importlib
import logging
import os
import sys

from llmbench.common.version import version

# Before any grpc import: gRPC's C core logs every failed TLS handshake at INFO on stderr, beside the one
# line of ours that says what to fix. Its errors still show; a GRPC_VERBOSITY of the user's wins.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

# subcommand -> module (or module:object) providing add_arguments(parser) and run(args) -> int.
# Imported lazily so `llmbench agent` never loads coordinator code and vice versa.
COMMANDS = {
    "agent": ("llmbench.agent.commands.agent", "serve a model over gRPC (a mesh node)"),
    "generate": ("llmbench.agent.commands.generate", "generate from JSONL prompts, in-process or via an agent"),
    "bench": ("llmbench.agent.commands.bench", "engine-only throughput benchmark (no gRPC)"),
    "calibrate": ("llmbench.agent.commands.calibrate", "a calibrated FP8 checkpoint (static scales) from a float one"),
    "coordinator": ("llmbench.tui.front:Coordinator", "run MLPerf LoadGen against agents"),
    "run": ("llmbench.tui.front:Run", "start local agents and run the coordinator (the demo)"),
    "accuracy": ("llmbench.coordinator.commands.accuracy", "score an mlperf_log_accuracy.json with ROUGE"),
    "compliance": ("llmbench.coordinator.commands.compliance", "MLPerf compliance checks (TEST06)"),
    "submission": ("llmbench.coordinator.commands.submission", "build an MLPerf submission tree from runs, run MLCommons' checker"),
    "compare": ("llmbench.coordinator.commands.compare", "runs side by side from their results.json, with ratios"),
    "tui": ("llmbench.tui.cli", "watch a running coordinator"),
}


class CliError(Exception):
    """A user-facing failure: printed as one line, exit code 2."""


class OneLineParser(argparse.ArgumentParser):
    """A usage error is one line and where to read more, not the whole usage (20 lines for `run`)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _parser(command: str | None) -> tuple[argparse.ArgumentParser, argparse.ArgumentParser | None]:
    """The top parser and the chosen subcommand's; only its module is imported (torch alone costs a second)."""
    parser = OneLineParser(prog="llmbench", description="MLPerf Llama-3.1-8B benchmark mesh")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging and full tracebacks")
    parser.add_argument("--version", action="version", version=f"llmbench {version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    chosen = None
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:
            path, _, attr = module.partition(":")
            mod = importlib.import_module(path)
            mod = getattr(mod, attr) if attr else mod
            mod.add_arguments(p)
            p.set_defaults(_module=mod)
            chosen = p
    return parser, chosen


def parse_args(argv: list[str]) -> argparse.Namespace:
    command = next((a for a in argv if not a.startswith("-")), None)
    parser, chosen = _parser(command)
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # the subcommand's usage, not the top-level one, says what it takes
        (chosen or parser).error(f"unrecognized arguments: {' '.join(unknown)}")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname).1s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        return int(args._module.run(args) or 0)
    except BrokenPipeError:  # the reader left (`llmbench accuracy | head`): what it read is what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit's flush fails silently
        return 128 + 13  # as a process ended by SIGPIPE
    except KeyboardInterrupt:
        print("llmbench: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # one clear line unless asked for the traceback
        if args.verbose:
            raise
        print(f"llmbench {args.command}: error: {exc}", file=sys.stderr)
        return 2


def _alias(command: str) -> int:
    argv = sys.argv[1:]
    return main(argv if argv == ["--version"] else [command, *argv])


def agent_main() -> int:
    return _alias("agent")


def coordinator_main() -> int:
    return _alias("coordinator")
