"""The Llama model: its config and presets, the layers (torch reference and Triton paths), fp8
layer GEMMs, the checkpoint loader (HF names, pre-quantized FP8 checkpoints: their scheme, their
scales, and the calibrated ones `llmbench calibrate` writes) and the tokenizer.
"""

__all__ = ["config", "fp8", "fp8_checkpoint", "fp8_export", "fp8_scheme", "hf_names", "llama", "loader",
           "tokenizer"]
