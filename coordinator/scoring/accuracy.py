"""MLPerf llama3.1-8b and llama3.1-8b-edge accuracy: ROUGE of the outputs in mlperf_log_accuracy.json.

Follows MLPerf's evaluation.py: entries de-duplicated by qsl_idx (first kept), data decoded as
little-endian int32 token ids with special tokens skipped, predictions and references stripped,
sentence-split and newline-joined, rouge_score's RougeScorer (rouge1, rouge2, rougeL, rougeLsum,
Porter stemmer) per sample, F-measures averaged and ×100; gen_len is the total characters of the
processed predictions, gen_num their count.

MLPerf's pass marks: each ROUGE at least 99% of the reference implementation's score, gen_len
within 90-110% of the reference's (mlcommons/inference submission checker). The reference is the
run's benchmark's (the benchmark table): llama3.1-8b's over all 13,368 samples, llama3.1-8b-edge's
over its 5,000-sample file. For any other count the gen_len window is scaled by n / the benchmark's
samples (the reference's characters per sample); the verdicts are then only indicative, since a
subset's summaries are not the full set's.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from pathlib import Path

import numpy as np

from llmbench.coordinator.data import prompt
from llmbench.coordinator.scoring import sentences
from llmbench.coordinator.data.dataset import Dataset
from llmbench.coordinator.loadgen.benchmarks import LLAMA3_1_8B, Benchmark

ROUGE_KEYS = ("rouge1", "rouge2", "rougeL", "rougeLsum")
ROUGE_FRACTION = 0.99
GEN_LEN_RANGE = (0.9, 1.1)


def rouge_targets(benchmark: Benchmark) -> dict[str, float]:
    return {key: value * ROUGE_FRACTION for key, value in benchmark.reference.rouge.items()}


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


@dataclass
class AccuracyResult:
    rouge1: float
    rouge2: float
    rougeL: float
    rougeLsum: float
    gen_len: int
    gen_num: int
    splitter: str  # which sentence splitter was used
    benchmark: Benchmark = LLAMA3_1_8B  # whose reference scores the targets are
    # each sample's output ids by qsl_idx, in log order, as its log holds them (empty when scored from text)
    tokens: dict[int, list[int]] = dataclass_field(default_factory=dict, repr=False, compare=False)

    def gen_len_window(self) -> tuple[float, float]:
        expected = self.benchmark.reference.gen_len * self.gen_num / self.benchmark.samples
        return expected * GEN_LEN_RANGE[0], expected * GEN_LEN_RANGE[1]

    def checks(self) -> dict[str, bool]:
        low, high = self.gen_len_window()
        passed = {key: getattr(self, key) >= target for key, target in rouge_targets(self.benchmark).items()}
        passed["gen_len"] = low <= self.gen_len <= high
        return passed

    @property
    def passed(self) -> bool:
        return all(self.checks().values())

    def to_json(self) -> dict:
        return {"rouge1": self.rouge1, "rouge2": self.rouge2, "rougeL": self.rougeL,
                "rougeLsum": self.rougeLsum, "gen_len": self.gen_len, "gen_num": self.gen_num}

    def mlperf_results(self) -> str:
        """The lines MLPerf's evaluation prints, that its submission checker reads out of accuracy.txt
        (ROUGE as quoted strings, gen_len and gen_num as plain integers)."""
        scores = {key: f"{getattr(self, key)}" for key in ROUGE_KEYS}
        return f"Results\n\n{ {**scores, 'gen_len': int(self.gen_len), 'gen_num': int(self.gen_num)} }\n"

    def accuracy_txt(self) -> str:
        """accuracy.txt: MLPerf's lines first (what a submission needs), then our table with the verdicts."""
        return f"{self.mlperf_results()}\n{self.table()}\n"

    def table(self) -> str:
        bench, checks, targets = self.benchmark, self.checks(), rouge_targets(self.benchmark)
        rouge, gen_len = bench.reference.rouge, bench.reference.gen_len
        low, high = self.gen_len_window()
        rows = [f"{'metric':<10} {'value':>12}  {'target':<34} result"]
        rows += [f"{key:<10} {getattr(self, key):>12.4f}  {f'>= {targets[key]:.4f} (99% of {rouge[key]})':<34} "
                 f"{verdict(checks[key])}" for key in ROUGE_KEYS]
        rows.append(f"{'gen_len':<10} {self.gen_len:>12,}  {f'{low:,.0f} .. {high:,.0f}':<34} {verdict(checks['gen_len'])}")
        rows.append(f"{'gen_num':<10} {self.gen_num:>12,}")
        scope = (f"all {bench.samples:,} samples of {bench.name}" if self.gen_num == bench.samples else
                 f"{self.gen_num:,} samples; {bench.name} targets are for {bench.samples:,}: gen_len window "
                 f"{gen_len:,} x 90-110% scaled by {self.gen_num:,}/{bench.samples:,}, verdicts only indicative")
        return "\n".join([f"MLPerf accuracy, {bench.name} on CNN/DailyMail ({scope})",
                          f"sentence splitter: {self.splitter}", *rows, f"accuracy: {verdict(self.passed)}"])


def score(predictions: list[str], references: list[str], splitter: sentences.Splitter | None = None,
          benchmark: Benchmark = LLAMA3_1_8B) -> AccuracyResult:
    """ROUGE of decoded predictions against references, with MLPerf's postprocessing."""
    from rouge_score import rouge_scorer
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if not predictions:
        raise ValueError("nothing to score: no predictions")
    splitter = splitter or sentences.get_splitter()
    preds = [sentences.split_lines(p, splitter) for p in predictions]
    refs = [sentences.split_lines(r, splitter) for r in references]
    logging.getLogger("absl").setLevel(logging.WARNING)  # rouge_score says "Using default tokenizer." at INFO
    scorer = rouge_scorer.RougeScorer(list(ROUGE_KEYS), use_stemmer=True)
    totals = dict.fromkeys(ROUGE_KEYS, 0.0)
    for pred, ref in zip(preds, refs):
        scores = scorer.score(ref, pred)
        for key in ROUGE_KEYS:
            totals[key] += scores[key].fmeasure
    means = {key: round(totals[key] / len(preds) * 100, 4) for key in ROUGE_KEYS}
    return AccuracyResult(**means, gen_len=sum(len(p) for p in preds), gen_num=len(preds), splitter=splitter.name,
                          benchmark=benchmark)


def read_log(path: str | Path) -> list[dict]:
    """Entries of an mlperf_log_accuracy.json, each checked for seq_id, qsl_idx and hex data."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"accuracy log {path} does not exist")
    try:
        entries = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"accuracy log {path} is not JSON ({exc.msg} at line {exc.lineno}); "
                         f"a run that died before LoadGen finished leaves it truncated") from None
    if not isinstance(entries, list):
        raise ValueError(f"accuracy log {path}: expected a JSON list of entries, got {type(entries).__name__}")
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise ValueError(f"accuracy log {path} entry {i} is not an object")
        for field in ("qsl_idx", "data"):
            if field not in entry:
                raise ValueError(f"accuracy log {path} entry {i} has no field '{field}'")
        if not isinstance(entry["qsl_idx"], int) or entry["qsl_idx"] < 0:
            raise ValueError(f"accuracy log {path} entry {i} field 'qsl_idx' is not a sample index")
    return entries


def decode_tokens(path: Path | str, index: int, entry: dict, field: str = "data") -> np.ndarray:
    """A hex field of a log entry as little-endian int32 token ids."""
    try:
        raw = bytes.fromhex(entry[field])
    except (TypeError, ValueError):
        raise ValueError(f"accuracy log {path} entry {index} field '{field}' is not a hex string") from None
    if len(raw) % 4:
        raise ValueError(f"accuracy log {path} entry {index} field '{field}' has {len(raw)} bytes, "
                         f"not a whole number of int32 tokens")
    return np.frombuffer(raw, dtype="<i4")


def unique_by_sample(entries: list[dict]) -> list[tuple[int, dict]]:
    """(position, entry) pairs, the first entry of each qsl_idx, in log order (as MLPerf keeps them)."""
    seen: set[int] = set()
    kept = []
    for i, entry in enumerate(entries):
        if entry["qsl_idx"] not in seen:
            seen.add(entry["qsl_idx"])
            kept.append((i, entry))
    return kept


def evaluate(log_path: str | Path, dataset: Dataset, tokenizer: prompt.Tokenizer | str | Path,
             splitter: sentences.Splitter | None = None, *, benchmark: Benchmark) -> AccuracyResult:
    """Score LoadGen's mlperf_log_accuracy.json against `dataset`'s references, by `benchmark`'s targets.

    `dataset` must be loaded as for the run (same file, --max-samples and limits) so qsl_idx
    means the same sample; `tokenizer` is a loaded tokenizer or a path for prompt.load_tokenizer."""
    if dataset.references is None:
        raise ValueError(f"dataset {dataset.name} has no reference summaries: accuracy needs a real dataset")
    tok = prompt.load_tokenizer(tokenizer) if isinstance(tokenizer, (str, Path)) else tokenizer
    entries = read_log(log_path)
    if not entries:
        raise ValueError(f"accuracy log {log_path} has no entries (was the run in accuracy mode?)")
    tokens, references = {}, []
    for i, entry in unique_by_sample(entries):
        idx = entry["qsl_idx"]
        if idx >= len(dataset.references):
            raise ValueError(f"accuracy log {log_path} entry {i} has qsl_idx {idx} but dataset {dataset.name} has "
                             f"{len(dataset.references)} samples: not the dataset (or --max-samples) of the run")
        tokens[idx] = decode_tokens(log_path, i, entry).tolist()
        references.append(dataset.references[idx])
    result = score([tok.decode(ids) for ids in tokens.values()], references, splitter, benchmark)
    result.tokens = tokens
    return result
