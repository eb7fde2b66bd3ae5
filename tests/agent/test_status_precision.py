"""What an agent reports of its precision (ModelInfo's weight, activation and KV scales) for a float
checkpoint, --quantization fp8 on one, and pre-quantized FP8 checkpoints in both formats, and the
coordinator's one-line summary of it (report.md, results.json)."""
import pytest

from llmbench.agent.engine.paged import PagedEngine
from llmbench.agent.engine.types import EngineConfig
from llmbench.agent.server.status import StatusReporter
from llmbench.coordinator.run.session import precision
from fp8_checkpoints import Scheme, write_checkpoint
from hf_reference import prompts, save_hf

CASES = {
    "float": (None, "none", "auto", ("", "", ""), "float32"),
    "dynamic_fp8": (None, "fp8", "fp8", ("channel", "dynamic", ""),
                    "float32, fp8 GEMMs (per-channel weights, dynamic activations), KV float8_e4m3fn"),
    "compressed_tensors_static_kv": (Scheme("compressed-tensors", "tensor", "static", kv=True), "fp8", "fp8",
                                     ("tensor", "static", "checkpoint"),
                                     "float32, fp8 GEMMs (per-tensor weights, static activations), "
                                     "KV float8_e4m3fn (checkpoint scales)"),
    "modelopt_kv_in_a_float_cache": (Scheme("modelopt", "tensor", "static", kv=True), "fp8", "auto",
                                     ("tensor", "static", "checkpoint"),
                                     "float32, fp8 GEMMs (per-tensor weights, static activations), "
                                     "KV float32 (checkpoint scales)"),
    "modelopt_per_channel_dynamic": (Scheme("modelopt", "channel", "dynamic", kv=False), "fp8", "auto",
                                     ("channel", "dynamic", ""),
                                     "float32, fp8 GEMMs (per-channel weights, dynamic activations)"),
}


@pytest.mark.parametrize("name", CASES)
def test_model_info_carries_the_scales(tmp_path, name):
    scheme, quantization, kv_cache_dtype, scales, summary = CASES[name]
    path = tmp_path / "model"
    if scheme is None:
        save_hf(path)
    else:
        write_checkpoint(path, scheme, prompts(1000, [40, 25], seed=2))
    engine = PagedEngine(EngineConfig(model=str(path), device="cpu", dtype="float32", quantization=quantization,
                                      kv_cache_dtype=kv_cache_dtype, num_kv_blocks=16))
    info = StatusReporter(engine, "a", "n").model_info()
    assert (info.weight_scales, info.activation_scales, info.kv_scales) == scales
    assert precision(info) == summary
