"""`llmbench accuracy`: score an mlperf_log_accuracy.json with MLPerf's ROUGE evaluation.

Prints the table beside the 99% targets of the benchmark's reference; exit status 0 on PASS, 1 on FAIL.
With --baseline, also each score as a share of that run's (MLPerf's rule with the baseline in the
reference's place) and the two runs' token agreement; the exit status is then that verdict's."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from llmbench.coordinator.scoring import accuracy, baseline
from llmbench.coordinator.data import loaders, prompt
from llmbench.coordinator.data.dataset import Dataset
from llmbench.coordinator.loadgen import benchmarks
from llmbench.coordinator.loadgen.benchmarks import Benchmark
from llmbench.coordinator.run.outputs import writable_file


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--log", required=True, help="LoadGen's mlperf_log_accuracy.json")
    parser.add_argument("--dataset", required=True,
                        help="the run's dataset: cnn_eval.json, or CNN/DailyMail validation (jsonl, parquet, "
                             "arrow, save_to_disk folder)")
    parser.add_argument("--tokenizer", required=True,
                        help="model folder, tokenizer folder or Llama-3 tokenizer.model (tiktoken)")
    parser.add_argument("--benchmark", choices=list(benchmarks.BENCHMARKS), default=None,
                        help="whose accuracy targets (default: the one whose whole dataset has as many samples, "
                             + ", ".join(f"{b.name} {b.samples:,}" for b in benchmarks.BENCHMARKS.values())
                             + f"; else {benchmarks.DEFAULT.name})")
    parser.add_argument("--max-samples", type=int, default=None,
                        help="as given to the run: the dataset's first N samples")
    parser.add_argument("--max-prompt-tokens", type=int, default=None,
                        help="as given to the run (default 2540): longer prompts were refused")
    parser.add_argument("--baseline", metavar="OTHER_LOG", default=None,
                        help="another run's mlperf_log_accuracy.json of the same samples (e.g. float32 for a bf16 "
                             "or fp8 run): judge the log against its scores (each ROUGE >= 99 %% of the baseline's, "
                             "gen_len 90-110 %%) and count the outputs that agree token by token; the exit status "
                             "is then this verdict")
    parser.add_argument("--json", metavar="OUT", default=None,
                        help='write {"rouge1","rouge2","rougeL","rougeLsum","gen_len","gen_num"} here (with '
                             '--baseline, also "baseline": its scores, "share", "passed" and the agreement)')


def benchmark_of(args: argparse.Namespace, dataset: Dataset) -> Benchmark:
    """--benchmark; without it (a log scored on its own names no benchmark), the one whose whole dataset
    has this many samples, else the default."""
    if args.benchmark is not None:
        return benchmarks.get(args.benchmark)
    size = len(dataset.references or ())
    return next((b for b in benchmarks.BENCHMARKS.values() if b.samples == size), benchmarks.DEFAULT)


def run(args: argparse.Namespace) -> int:
    if args.json:
        writable_file(Path(args.json), "--json")  # before the work, not after it
    dataset = loaders.load(args.dataset, tokenizer=args.tokenizer, max_samples=args.max_samples,
                            max_prompt_tokens=args.max_prompt_tokens)
    for note in dataset.notes:
        print(f"note: {note}")
    tokenizer = prompt.load_tokenizer(args.tokenizer)
    bench = benchmark_of(args, dataset)
    result = accuracy.evaluate(args.log, dataset, tokenizer, benchmark=bench)
    print(result.table())
    out, passed = result.to_json(), result.passed
    if args.baseline:
        base = accuracy.evaluate(args.baseline, dataset, tokenizer, benchmark=bench)
        comparison = baseline.BaselineComparison(result, base, args.baseline,
                                                 baseline.agreement(result.tokens, base.tokens))
        print(comparison.table())
        out["baseline"], passed = comparison.to_json(), comparison.passed
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0 if passed else 1
