"""Pre-quantized FP8 checkpoints (compressed-tensors, ModelOpt): the engine's logits against a float32
reference of the arithmetic each checkpoint prescribes, and one clear error for each malformed one."""
import json

import pytest
import torch

from llmbench.agent.engine.paged import PagedEngine
from llmbench.agent.engine.types import EngineConfig
from llmbench.agent.model.fp8 import Fp8Linear
from llmbench.cli.main import main
from fp8_checkpoints import Reference, Scheme, edit_config, edit_tensors, write_checkpoint
from hf_reference import our_logits, prompts, save_hf, start_engine

CHUNK = 64  # the prompt goes in 3 chunks: later ones read their prefix from the (fp8) cache
PROMPT = prompts(1000, [150], seed=3)[0]
CALIBRATION = prompts(1000, [120, 90, 60], seed=7)


def rel_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    return ((x.double() - ref.double()).norm() / ref.double().norm()).item()


def engine_logits(path, **cfg) -> torch.Tensor:
    engine = start_engine(path, num_kv_blocks=64, quantization="fp8", **cfg)
    try:
        return our_logits(engine, PROMPT, chunk=CHUNK)
    finally:
        engine.stop()


def test_the_reference_is_transformers_when_nothing_is_quantized(tmp_path):
    hf = save_hf(tmp_path / "float", seed=0)
    with torch.no_grad():
        expected = hf(torch.tensor([PROMPT])).logits[0]
    ours = Reference(tmp_path / "float", kv_fp8=False, quantize=False).logits(PROMPT, CHUNK)
    assert rel_err(ours, expected) < 1e-5


@pytest.mark.parametrize("scheme, kv_cache_dtype", [
    (Scheme("compressed-tensors", "channel", "static", kv=True), "fp8"),  # RedHatAI ...-FP8 with KV scales
    (Scheme("compressed-tensors", "tensor", "static", kv=False), "auto"),
    (Scheme("compressed-tensors", "channel", "dynamic", kv=False), "fp8"),  # ...-FP8-dynamic
    (Scheme("modelopt", "tensor", "static", kv=True), "fp8"),  # ModelOpt FP8
    (Scheme("modelopt", "tensor", "static", kv=True), "auto"),  # KV scales folded, cache in float32
    (Scheme("modelopt", "channel", "dynamic", kv=True), "fp8"),  # FP8_PER_CHANNEL_PER_TOKEN
])
def test_engine_computes_what_the_checkpoint_prescribes(tmp_path, scheme, kv_cache_dtype):
    path = tmp_path / "fp8"
    write_checkpoint(path, scheme, CALIBRATION)
    ours = engine_logits(path, kv_cache_dtype=kv_cache_dtype)
    ref = Reference(path, kv_fp8=kv_cache_dtype == "fp8").logits(PROMPT, CHUNK)
    unquantized = Reference(tmp_path / "fp8-float", kv_fp8=False, quantize=False).logits(PROMPT, CHUNK)
    err, fp8_effect = rel_err(ours, ref), rel_err(ref, unquantized)
    # the same e4m3 roundings: float32 rounding apart (the quantization itself moves them by percents)
    assert err < 1e-5 and fp8_effect > 0.01, (err, fp8_effect)


def test_calibrated_kv_scales_round_only_the_odd_activation_differently(tmp_path):
    """KV scales that are not powers of two: folded into the weight scales, they change float32's
    rounding, which moves the odd activation to its other e4m3 neighbour (one in 8192 here) and
    each such flip spreads a little through the layers above; still far below fp8's own effect."""
    path = tmp_path / "fp8"
    write_checkpoint(path, Scheme("compressed-tensors", "channel", "static", kv=True), CALIBRATION, pow2_kv=False)
    ours = engine_logits(path, kv_cache_dtype="fp8")
    ref = Reference(path, kv_fp8=True).logits(PROMPT, CHUNK)
    unquantized = Reference(tmp_path / "fp8-float", kv_fp8=False, quantize=False).logits(PROMPT, CHUNK)
    err, fp8_effect = rel_err(ours, ref), rel_err(ref, unquantized)
    assert err < 2e-2 and fp8_effect > 10 * err, (err, fp8_effect)
    assert (ours.argmax(-1) == ref.argmax(-1)).float().mean() > 0.95


def test_static_scales_land_in_the_layers(tmp_path):
    path = tmp_path / "fp8"
    write_checkpoint(path, Scheme("compressed-tensors", "channel", "static", kv=False), CALIBRATION)
    engine = start_engine(path, num_kv_blocks=16, quantization="fp8")
    try:
        layer = engine.runner.model.layers[0]
        qkv, down = layer.self_attn.qkv_proj, layer.mlp.down_proj
        assert isinstance(qkv, Fp8Linear) and qkv.weight.dtype == torch.float8_e4m3fn
        assert not layer.input_layernorm.fp8_out  # static layers quantize their input themselves
        ref = Reference(path, kv_fp8=False)
        scales = [ref.t[f"model.layers.0.self_attn.{p}_proj.input_scale"] for p in "qkv"]
        assert qkv.input_scale.item() == torch.stack(scales).max().item() == scales[1].item()  # k's, skewed up
        assert torch.equal(down.dequantized(), ref.weight("model.layers.0.mlp.down_proj"))
    finally:
        engine.stop()


def _drop(name):
    return lambda t: t.pop(name)


def _group(change):
    return lambda c: change(c["quantization_config"]["config_groups"]["group_0"])


CT_STATIC_KV = Scheme("compressed-tensors", "channel", "static", kv=True)
MO_STATIC_KV = Scheme("modelopt", "tensor", "static", kv=True)


@pytest.mark.parametrize("scheme, edit, message", [
    (CT_STATIC_KV, ("config", _group(lambda g: g["weights"].update(strategy="block"))),
     "weights: strategy 'block' is not supported"),
    (CT_STATIC_KV, ("config", _group(lambda g: g["weights"].update(num_bits=4))), "4-bit float is not supported"),
    (CT_STATIC_KV, ("config", _group(lambda g: g.update(input_activations=None))), "weight-only fp8"),
    (CT_STATIC_KV, ("config", lambda c: c["quantization_config"].update(quant_method="awq")),
     "quant_method 'awq' is not supported"),
    (MO_STATIC_KV, ("modelopt", lambda q: q["quantization"].update(quant_algo="NVFP4")),
     "quant_algo 'NVFP4' is not supported"),
    (MO_STATIC_KV, ("modelopt", lambda q: q.update(quantization=["FP8"])), "'quantization' must be an object"),
    (CT_STATIC_KV, ("tensors", _drop("model.layers.1.mlp.down_proj.weight_scale")),
     "lacks the scale tensor 'model.layers.1.mlp.down_proj.weight_scale'"),
    (CT_STATIC_KV, ("tensors", _drop("model.layers.0.self_attn.k_proj.input_scale")),
     "lacks the scale tensor 'model.layers.0.self_attn.k_proj.input_scale'"),
    (CT_STATIC_KV, ("tensors", _drop("model.layers.1.self_attn.k_scale")),
     "lacks the scale tensor 'model.layers.1.self_attn.k_scale'"),
    (MO_STATIC_KV, ("tensors", _drop("model.layers.0.self_attn.v_proj.v_scale")),
     "lacks the scale tensor 'model.layers.0.self_attn.v_proj.v_scale'"),
    (CT_STATIC_KV, ("tensors", lambda t: t.update({"model.layers.0.mlp.up_proj.weight_scale": torch.ones(1)})),
     "'model.layers.0.mlp.up_proj.weight_scale' has 1 values; a per-channel weight scale of 128 rows has 128"),
    (CT_STATIC_KV, ("tensors", lambda t: t.update({"model.layers.0.self_attn.q_proj.input_scale": torch.zeros(1)})),
     "'model.layers.0.self_attn.q_proj.input_scale' holds a scale that is not positive"),
    (CT_STATIC_KV, ("tensors", lambda t: t.update({"model.layers.0.mlp.gate_proj.weight": torch.zeros(128, 64)})),
     "'model.layers.0.mlp.gate_proj.weight' is float32, but the compressed-tensors config says"),
    (MO_STATIC_KV, ("tensors", lambda t: t.update({"model.layers.5.self_attn.k_proj.k_scale": torch.ones(())})),
     "'model.layers.5.self_attn.k_proj.k_scale' fits no layer"),
])
def test_malformed_checkpoints_name_the_problem(tmp_path, scheme, edit, message):
    path = tmp_path / "fp8"
    write_checkpoint(path, scheme, CALIBRATION)
    kind, change = edit
    if kind == "config":
        edit_config(path, change)
    elif kind == "tensors":
        edit_tensors(path, change)
    else:
        q = json.loads((path / "hf_quant_config.json").read_text())
        change(q)
        (path / "hf_quant_config.json").write_text(json.dumps(q))
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        PagedEngine(EngineConfig(model=str(path), device="cpu", quantization="fp8", num_kv_blocks=16)).start()


def test_an_fp8_checkpoint_without_the_flag_is_one_line_exit_2(tmp_path, capsys):
    path = tmp_path / "fp8"
    write_checkpoint(path, Scheme("modelopt", "tensor", "static", kv=False), CALIBRATION)
    prompt = tmp_path / "prompts.jsonl"
    prompt.write_text(json.dumps({"id": 0, "tokens": PROMPT[:8]}) + "\n")
    capsys.readouterr()  # transformers' progress bar, saving the checkpoint
    assert main(["generate", "--model", str(path), "--device", "cpu", "--input", str(prompt)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.endswith("run it with --quantization fp8"), err
