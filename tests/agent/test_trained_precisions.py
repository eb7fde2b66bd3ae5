"""bf16 and fp8 judged against our own float32 on a real trained checkpoint and real CNN/DailyMail
samples: the same prompts in each precision, their outputs as LoadGen's accuracy log holds them, and
`llmbench accuracy --baseline` reporting each ROUGE as a share of float32's and the token agreement."""
import json
import os

import numpy as np
import pytest

from llmbench.agent.engine.in_process import generate
from llmbench.agent.engine.paged import PagedEngine
from llmbench.agent.engine.types import EngineConfig, Request
from llmbench.cli.main import main
from llmbench.coordinator.scoring.accuracy import ROUGE_KEYS
from cli_processes import error_of
from trained_checkpoint import chat_prompts, cnndm_records, smollm2  # noqa: F401 (smollm2: a fixture)

SAMPLES = 3  # the shortest articles (~200 prompt tokens), written as the accuracy command's dataset
NEW_TOKENS = 32  # short of MLPerf's 128 to keep three precisions on two CPU cores near a minute
PRECISIONS = {"float32": dict(dtype="float32"), "bfloat16": dict(dtype="bfloat16"),
              "fp8": dict(dtype="bfloat16", quantization="fp8")}


def outputs(folder, prompts: list[list[int]], **precision) -> list[list[int]]:
    engine = PagedEngine(EngineConfig(model=str(folder), device="cpu", num_kv_blocks=256, max_batch=SAMPLES,
                                      **precision))
    engine.start()
    try:
        got = generate(engine, [Request(id=i, prompt=p, max_new_tokens=NEW_TOKENS) for i, p in enumerate(prompts)],
                       timeout=600)
    finally:
        engine.stop()
    return [got[i].tokens for i in range(len(prompts))]


def accuracy_log(path, outputs: list[list[int]]):
    """As LoadGen writes it: one entry per sample, the output ids as little-endian int32 hex."""
    path.write_text(json.dumps([{"seq_id": i, "qsl_idx": i, "data": np.asarray(ids, "<i4").tobytes().hex().upper()}
                                for i, ids in enumerate(outputs)]))
    return path


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """The records the runs summarise, as a dataset file of their own (a tmp copy: the log's qsl_idx
    are their positions)."""
    path = tmp_path_factory.mktemp("dataset") / "cnndm.jsonl"
    records = cnndm_records(SAMPLES, shortest=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path, records


@pytest.fixture(scope="module")
def logs(smollm2, dataset, tmp_path_factory):  # noqa: F811
    folder = tmp_path_factory.mktemp("precisions")
    prompts = chat_prompts(smollm2, dataset[1])
    runs = {name: outputs(smollm2, prompts, **p) for name, p in PRECISIONS.items()}
    return {name: (accuracy_log(folder / f"{name}.json", out), out) for name, out in runs.items()}


def accuracy(smollm2, dataset, log, baseline, out):  # noqa: F811
    code = main(["accuracy", "--log", str(log), "--baseline", str(baseline), "--dataset", str(dataset[0]),
                 "--tokenizer", str(smollm2), "--json", str(out)])
    return code, json.loads(out.read_text())


@pytest.mark.slow
@pytest.mark.parametrize("name", ["bfloat16", "fp8"])
def test_precision_against_float32(smollm2, dataset, logs, tmp_path, capsys, name):  # noqa: F811
    (log, got), (base_log, base) = logs[name], logs["float32"]
    code, doc = accuracy(smollm2, dataset, log, base_log, tmp_path / "vs.json")
    printed = capsys.readouterr().out
    _, own = accuracy(smollm2, dataset, base_log, base_log, tmp_path / "own.json")  # float32 scored on its own
    b = doc["baseline"]
    assert {key: b[key] for key in ROUGE_KEYS} == {key: own[key] for key in ROUGE_KEYS}
    for key in (*ROUGE_KEYS, "gen_len"):
        assert b["share"][key] == pytest.approx(doc[key] / own[key])
    assert b["identical_outputs"] == sum(g == w for g, w in zip(got, base)) and b["samples"] == SAMPLES
    prefix = [len(os.path.commonprefix([g, w])) / max(len(g), len(w)) for g, w in zip(got, base)]
    assert b["token_prefix_share"] == pytest.approx(sum(prefix) / SAMPLES)
    assert code == (0 if b["passed"] else 1)
    assert f"against the baseline {base_log}" in printed and "token-identical to the baseline's" in printed
    print(f"{name} vs float32: {b['identical_outputs']}/{SAMPLES} identical, prefix {b['token_prefix_share']:.3f}, "
          f"ROUGE-1 share {b['share']['rouge1']:.3f}")


@pytest.mark.slow
def test_float32_against_itself_passes_whole(smollm2, dataset, logs, tmp_path):  # noqa: F811
    log, _ = logs["float32"]
    code, doc = accuracy(smollm2, dataset, log, log, tmp_path / "self.json")
    b = doc["baseline"]
    assert code == 0 and b["passed"] and b["identical_outputs"] == SAMPLES and b["token_prefix_share"] == 1.0
    assert all(share == 1.0 for share in b["share"].values())


@pytest.mark.slow
def test_baseline_of_other_samples_is_one_error_line(smollm2, dataset, logs, tmp_path, capsys):  # noqa: F811
    log, out = logs["float32"]
    fewer = accuracy_log(tmp_path / "fewer.json", out[:-1])
    message = error_of(capsys, "accuracy", "--log", log, "--baseline", fewer, "--dataset", dataset[0],
                       "--tokenizer", smollm2)
    assert "not of the same samples: 1 only in the log, 0 only in the baseline" in message
