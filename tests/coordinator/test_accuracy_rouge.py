"""MLPerf ROUGE accuracy: score(), evaluate() on hand-built LoadGen logs, and `llmbench accuracy`."""
import argparse
import json

import numpy as np
import pytest
from rouge_score import rouge_scorer

from llmbench.cli.main import main as llmbench
from llmbench.coordinator.commands.accuracy import benchmark_of
from llmbench.coordinator.scoring import accuracy
from llmbench.coordinator.loadgen.benchmarks import LLAMA3_1_8B, LLAMA3_1_8B_EDGE
from llmbench.coordinator.data import loaders, prompt
from llmbench.coordinator.data.dataset import Dataset
from tokenizers_offline import tiny_tokenizer

PREDICTIONS = ["The mayor announced it on Monday. The city will open two new schools.",
               "A man was arrested after a crash.", "Shares rose 4 percent. Earnings hit a record."]
REFERENCES = ["City to open two new schools.\nMayor announced it on Monday.",
              "Police arrested a man, 34, after a highway crash.", "Company shares rose 4 percent on record earnings."]


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    return tiny_tokenizer(tmp_path_factory.mktemp("tok") / "tok")


def direct_rouge(preds, refs, splitter):
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL", "rougeLsum"], use_stemmer=True)
    joined = lambda t: "\n".join(splitter.split(t.strip()))  # noqa: E731
    scores = [scorer.score(joined(r), joined(p)) for p, r in zip(preds, refs)]
    return {k: float(np.mean([s[k].fmeasure for s in scores]) * 100) for k in accuracy.ROUGE_KEYS}


def test_score_equals_rouge_score_called_directly(splitter):
    result = accuracy.score(PREDICTIONS, REFERENCES, splitter)
    direct = direct_rouge(PREDICTIONS, REFERENCES, splitter)
    for key in accuracy.ROUGE_KEYS:
        assert getattr(result, key) == pytest.approx(direct[key], abs=5e-5)
    assert 0 < result.rouge2 < result.rouge1 < 100
    assert result.rougeLsum != result.rougeL  # sentences were split onto lines
    assert result.gen_num == 3
    assert result.gen_len == sum(len("\n".join(splitter.split(p))) for p in PREDICTIONS)
    assert result.splitter == splitter.name


def test_targets_are_99_percent_of_mlperf_reference_and_gen_len_window_scales():
    assert accuracy.rouge_targets(LLAMA3_1_8B) == pytest.approx({"rouge1": 38.391408, "rouge2": 15.748425,
                                                                 "rougeL": 24.250743, "rougeLsum": 35.43507})
    at = dict(rouge1=38.3915, rouge2=15.7485, rougeL=24.2508, rougeLsum=35.4351)
    full = accuracy.AccuracyResult(**at, gen_len=8_167_644, gen_num=13_368, splitter="s")
    assert full.passed and full.gen_len_window() == pytest.approx((7_350_879.6, 8_984_408.4))
    assert not accuracy.AccuracyResult(**dict(at, rouge2=15.7484), gen_len=8_167_644, gen_num=13_368, splitter="s").passed
    assert not accuracy.AccuracyResult(**at, gen_len=8_984_409, gen_num=13_368, splitter="s").passed
    assert accuracy.AccuracyResult(**at, gen_len=7_350_880, gen_num=13_368, splitter="s").passed
    half = accuracy.AccuracyResult(**at, gen_len=8_167_644 // 2, gen_num=6_684, splitter="s")
    assert half.checks() == dict(rouge1=True, rouge2=True, rougeL=True, rougeLsum=True, gen_len=True)
    assert not accuracy.AccuracyResult(**at, gen_len=8_167_644, gen_num=6_684, splitter="s").checks()["gen_len"]
    table = half.table()
    assert "6,684 samples; llama3.1-8b targets are for 13,368" in table and "accuracy: PASS" in table
    assert ">= 38.3914 (99% of 38.7792)" in table and "sentence splitter: s" in table
    assert list(half.to_json()) == ["rouge1", "rouge2", "rougeL", "rougeLsum", "gen_len", "gen_num"]
    edge = accuracy.AccuracyResult(**at, gen_len=3_051_113, gen_num=5_000, splitter="s", benchmark=LLAMA3_1_8B_EDGE)
    assert not edge.checks()["rouge1"] and edge.checks()["gen_len"]  # edge rouge1 target is 38.6694
    assert "all 5,000 samples of llama3.1-8b-edge" in edge.table()


def write_log(path, entries):
    path.write_text(json.dumps([
        {"seq_id": i, "qsl_idx": idx, "data": np.asarray(ids, "<i4").tobytes().hex().upper(), "token_count": len(ids)}
        for i, (idx, ids) in enumerate(entries)]))
    return path


def test_evaluate_end_to_end_dedups_and_skips_special_tokens(tmp_path, tok_dir, splitter):
    tok = prompt.load_tokenizer(tok_dir)
    eos = tok.tok.convert_tokens_to_ids("<|eot_id|>")
    dataset = Dataset(name="hand", prompts=[np.array([tok.bos_id], np.int32)] * 3, references=REFERENCES)
    log = write_log(tmp_path / "mlperf_log_accuracy.json", [
        (2, tok.encode(PREDICTIONS[2]) + [eos]),
        (0, [tok.bos_id] + tok.encode(PREDICTIONS[0])),
        (2, tok.encode("something else entirely")),  # a repeat of sample 2: MLPerf keeps the first
        (1, tok.encode(PREDICTIONS[1]) + [eos]),
    ])
    result = accuracy.evaluate(log, dataset, tok, splitter, benchmark=LLAMA3_1_8B)
    expected = accuracy.score([PREDICTIONS[2], PREDICTIONS[0], PREDICTIONS[1]],
                              [REFERENCES[2], REFERENCES[0], REFERENCES[1]], splitter)
    assert result == expected and result.gen_num == 3
    assert accuracy.evaluate(log, dataset, str(tok_dir), splitter, benchmark=LLAMA3_1_8B) == expected  # tokenizer path
    edge = accuracy.evaluate(log, dataset, tok, splitter, benchmark=LLAMA3_1_8B_EDGE)  # the run's, whatever the size
    assert edge.benchmark is LLAMA3_1_8B_EDGE and edge.rouge1 == result.rouge1
    assert "llama3.1-8b-edge targets are for 5,000" in edge.table() and ">= 38.6694 (99% of 39.06)" in edge.table()


def test_accuracy_cli_json_and_exit_status(tmp_path, tok_dir, splitter, capsys):
    tok = prompt.load_tokenizer(tok_dir)
    # references of ~611 characters each, MLPerf's mean summary length, so gen_len lands in the window
    refs = [" ".join([s] * 30)[:611].rsplit(" ", 1)[0] + "." for s in ("Shares rose today.", "Police made arrests.")]
    data = tmp_path / "validation.jsonl"
    data.write_text("".join(json.dumps({"article": a, "highlights": r}) + "\n" for a, r in zip(["one", "two"], refs)))
    log = write_log(tmp_path / "perfect.json", [(i, tok.encode(r)) for i, r in enumerate(refs)])
    out = tmp_path / "acc.json"
    code = llmbench(["accuracy", "--log", str(log), "--dataset", str(data), "--tokenizer", str(tok_dir),
                     "--json", str(out)])
    printed = capsys.readouterr().out
    written = json.loads(out.read_text())
    assert code == 0 and "accuracy: PASS" in printed and "sentence splitter:" in printed
    assert "2 samples; llama3.1-8b targets are for 13,368" in printed  # no --benchmark, not the edge file's size
    assert list(written) == ["rouge1", "rouge2", "rougeL", "rougeLsum", "gen_len", "gen_num"]
    assert written["rouge1"] == 100.0 and written["gen_num"] == 2
    short = write_log(tmp_path / "short.json", [(i, tok.encode("Shares.")) for i in range(2)])
    assert llmbench(["accuracy", "--log", str(short), "--dataset", str(data), "--tokenizer", str(tok_dir)]) == 1
    assert "accuracy: FAIL" in capsys.readouterr().out
    assert llmbench(["accuracy", "--log", str(log), "--dataset", str(data), "--tokenizer", str(tok_dir),
                     "--benchmark", "llama3.1-8b-edge"]) == 0
    assert "2 samples; llama3.1-8b-edge targets are for 5,000" in capsys.readouterr().out


def test_a_log_scored_on_its_own_takes_the_benchmark_of_its_dataset_size():
    def dataset(n: int) -> Dataset:
        return Dataset(name="d", prompts=[np.array([1], np.int32)] * n, references=["r"] * n)
    guess = argparse.Namespace(benchmark=None)
    assert benchmark_of(guess, dataset(5_000)) is LLAMA3_1_8B_EDGE  # the edge file
    assert benchmark_of(guess, dataset(4_999)) is LLAMA3_1_8B and benchmark_of(guess, dataset(13_368)) is LLAMA3_1_8B
    assert benchmark_of(argparse.Namespace(benchmark="llama3.1-8b"), dataset(5_000)) is LLAMA3_1_8B  # as told


@pytest.mark.parametrize("content, message", [
    (None, "does not exist"),
    ('[{"seq_id": 0, "qsl_idx": 0, "data": "0100', "not JSON"),
    ('{"qsl_idx": 0}', "expected a JSON list of entries"),
    ("[]", "has no entries"),
    ('[{"seq_id": 0, "qsl_idx": 0}]', "entry 0 has no field 'data'"),
    ('[{"seq_id": 0, "qsl_idx": -1, "data": ""}]', "entry 0 field 'qsl_idx' is not a sample index"),
    ('[{"seq_id": 0, "qsl_idx": 0, "data": "010000"}]', "entry 0 field 'data' has 3 bytes"),
    ('[{"seq_id": 0, "qsl_idx": 0, "data": "zz"}]', "entry 0 field 'data' is not a hex string"),
    ('[{"seq_id": 0, "qsl_idx": 7, "data": "01000000"}]', "qsl_idx 7 but dataset hand has 3 samples"),
])
def test_bad_logs_name_the_file_and_field(tmp_path, tok_dir, content, message):
    log = tmp_path / "mlperf_log_accuracy.json"
    if content is not None:
        log.write_text(content)
    dataset = Dataset(name="hand", prompts=[np.array([1], np.int32)] * 3, references=REFERENCES)
    with pytest.raises((ValueError, FileNotFoundError), match=message) as err:
        accuracy.evaluate(log, dataset, prompt.load_tokenizer(tok_dir), benchmark=LLAMA3_1_8B)
    assert str(log) in str(err.value) or "dataset hand" in str(err.value)


def test_dataset_without_references_is_refused(tmp_path, tok_dir):
    synthetic = loaders.load("synthetic", max_samples=2, vocab_size=500)
    with pytest.raises(ValueError, match="no reference summaries"):
        accuracy.evaluate(tmp_path / "x.json", synthetic, prompt.load_tokenizer(tok_dir), benchmark=LLAMA3_1_8B)
