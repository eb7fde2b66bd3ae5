"""The Llama model: its config and presets, the layers (torch reference and Triton paths), fp8
layer GEMMs, the checkpoint loader and the tokenizer.
"""

__all__ = ["config", "fp8", "llama", "loader", "tokenizer"]
