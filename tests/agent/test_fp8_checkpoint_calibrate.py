"""`llmbench calibrate`: the scales it writes are the ranges of the float forward, and the checkpoint
it writes loads and computes what its format prescribes."""
import json
import math

import pytest
from safetensors.torch import load_file

from llmbench.cli.main import main
from fp8_checkpoints import Reference, Scheme, calibrate, write_checkpoint
from hf_reference import prompts, save_hf
from test_fp8_checkpoint import CHUNK, PROMPT, engine_logits, rel_err
from tokenizers_offline import SHARED_DATA, tiny_tokenizer


def calibrated(tmp_path, records: list[dict], *extra: str):
    save_hf(tmp_path / "float", seed=0)
    dataset = tmp_path / "calibration.jsonl"
    dataset.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert main(["calibrate", "--model", str(tmp_path / "float"), "--dataset", str(dataset),
                 "--output", str(tmp_path / "fp8"), "--device", "cpu", *extra]) == 0
    return tmp_path / "fp8"


def check_against_the_float_forward(tmp_path, path, calibration_prompts):
    """Scales = amax / 448 of the float forward over the same prompts; logits as the format prescribes."""
    amax = calibrate(tmp_path / "float", calibration_prompts)
    t = load_file(str(path / "model.safetensors"))
    for i in range(2):
        for proj in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.o_proj", "mlp.up_proj", "mlp.down_proj"):
            assert math.isclose(t[f"model.layers.{i}.{proj}.input_scale"].item(), amax[f"{i}.{proj}"] / 448, rel_tol=1e-5)
        for kind in "kv":
            assert math.isclose(t[f"model.layers.{i}.self_attn.{kind}_scale"].item(), amax[f"{i}.{kind}"] / 448,
                                rel_tol=1e-5)
    ours = engine_logits(path, kv_cache_dtype="fp8")
    ref = Reference(path, kv_fp8=True).logits(PROMPT, CHUNK)
    unquantized = Reference(tmp_path / "float", kv_fp8=False, quantize=False).logits(PROMPT, CHUNK)
    err, fp8_effect = rel_err(ours, ref), rel_err(ref, unquantized)
    # calibrated scales are no powers of two: float32 rounds the odd activation apart (test_fp8_checkpoint)
    assert err < 2e-2 and fp8_effect > 10 * err, (err, fp8_effect)


def test_calibrate_token_records_and_load_the_result(tmp_path):
    calibration_prompts = prompts(1000, [120, 90, 60], seed=7)
    path = calibrated(tmp_path, [{"tok_input": p} for p in calibration_prompts])
    config = json.loads((path / "config.json").read_text())["quantization_config"]
    assert config["quant_method"] == "compressed-tensors" and config["kv_cache_scheme"]["strategy"] == "tensor"
    check_against_the_float_forward(tmp_path, path, calibration_prompts)


@pytest.mark.skipif(not SHARED_DATA.is_file(), reason="needs ../shared/data (real CNN/DailyMail records)")
def test_calibrate_real_articles(tmp_path):
    tokenizer = tiny_tokenizer(tmp_path / "tokenizer")
    articles = [json.loads(line) for line in SHARED_DATA.read_text().splitlines()[:6]]
    path = calibrated(tmp_path, articles, "--tokenizer", str(tokenizer), "--max-tokens", "300")
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(tokenizer)
    ids = [tok.encode(a["article"])[:300] for a in articles]
    assert all(i[0] == tok.bos_token_id and len(i) == 300 for i in ids)
    check_against_the_float_forward(tmp_path, path, ids)


@pytest.mark.parametrize("setup, message", [
    ("no_fields", "record 0 has neither 'article' (a string) nor 'tok_input'"),
    ("bad_ids", "record 0: its token ids are empty or not all in 0..999"),
    ("articles_no_tokenizer", "has articles but"),
    ("quantized", "is quantized already"),
    ("output_taken", "already holds a checkpoint"),
])
def test_calibrate_refuses_bad_input_in_one_line(tmp_path, capsys, setup, message):
    save_hf(tmp_path / "float", seed=0)
    model, output = tmp_path / "float", tmp_path / "out"
    records = {"no_fields": [{"text": "x"}], "bad_ids": [{"tok_input": [5, 1000]}],
               "articles_no_tokenizer": [{"article": "A short story."}]}.get(setup, [{"tok_input": [1, 2, 3]}])
    if setup == "quantized":
        model = tmp_path / "fp8"
        write_checkpoint(model, Scheme("modelopt", "tensor", "static", kv=False), [[1, 2, 3]])
    if setup == "output_taken":
        output.mkdir()
        (output / "config.json").write_text("{}")
    dataset = tmp_path / "calibration.jsonl"
    dataset.write_text("".join(json.dumps(r) + "\n" for r in records))
    capsys.readouterr()
    assert main(["calibrate", "--model", str(model), "--dataset", str(dataset), "--output", str(output),
                 "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not (output / "model.safetensors").exists()
