"""Triton kernels: paged attention, the KV cache write, fp8 quantization and the fused elementwise
Llama ops. They depend on torch and triton only.
"""

__all__ = ["fp8_format", "fp8_quant", "fused", "kv_write", "limits", "paged_attention"]
