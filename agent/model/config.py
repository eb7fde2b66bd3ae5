"""Model shape: read from an HF config.json or taken from a named preset."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class RopeScaling:
    """The `llama3` rope_scaling of Llama 3.1."""
    factor: float
    low_freq_factor: float
    high_freq_factor: float
    original_max_position_embeddings: int


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    max_position: int
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    rope_scaling: RopeScaling | None = None
    tie_embeddings: bool = False
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads",
                     "num_kv_heads", "head_dim", "max_position"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.num_heads % self.num_kv_heads:
            raise ConfigError(f"num_attention_heads ({self.num_heads}) is not a multiple of "
                              f"num_key_value_heads ({self.num_kv_heads})")
        if self.head_dim % 2:
            raise ConfigError(f"head_dim must be even for RoPE, got {self.head_dim}")
        if self.rms_norm_eps <= 0 or self.rope_theta <= 0:
            raise ConfigError("rms_norm_eps and rope_theta must be positive")

    @property
    def q_size(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        return self.num_kv_heads * self.head_dim

    @property
    def layer_matmul_params(self) -> int:
        """Weights one decoder layer multiplies by (q/k/v, o, gate/up, down): 2x this is its FLOPs per token."""
        h = self.hidden_size
        return h * (self.q_size + 2 * self.kv_size) + self.q_size * h + 3 * h * self.intermediate_size

    def num_parameters(self) -> int:
        h = self.hidden_size
        layer = self.layer_matmul_params + 2 * h  # and its two norms
        embed = self.vocab_size * h * (1 if self.tie_embeddings else 2)
        return self.num_layers * layer + embed + h


PRESETS: dict[str, ModelConfig] = {
    # Small enough for CPU tests, long enough for CNN/DM-shaped prompts (2540 + 128 tokens).
    "tiny": ModelConfig(vocab_size=1000, hidden_size=64, intermediate_size=128, num_layers=2,
                        num_heads=4, num_kv_heads=2, head_dim=16, max_position=4096,
                        rms_norm_eps=1e-5, rope_theta=10000.0, bos_token_id=1, eos_token_ids=(2,)),
    "llama3.1-8b": ModelConfig(
        vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_layers=32, num_heads=32,
        num_kv_heads=8, head_dim=128, max_position=131072, rms_norm_eps=1e-5, rope_theta=500000.0,
        rope_scaling=RopeScaling(factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                                 original_max_position_embeddings=8192),
        tie_embeddings=False, bos_token_id=128000, eos_token_ids=(128001, 128008, 128009)),
}


def _field(d: dict, key: str, kind: type, default=None, required: bool = False):
    if key not in d or d[key] is None:
        if required:
            raise ConfigError(f"config.json: missing required field {key!r}")
        return default
    value = d[key]
    ok = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        ok, value = True, float(value)
    if not ok:
        raise ConfigError(f"config.json: field {key!r} must be {kind.__name__}, got {value!r}")
    return value


def _rope(d: dict) -> tuple[float, RopeScaling | None]:
    # transformers >= 5 writes `rope_parameters` (theta inside); older files `rope_theta` + `rope_scaling`.
    params = d.get("rope_parameters") or d.get("rope_scaling") or {}
    if not isinstance(params, dict):
        raise ConfigError("config.json: rope_parameters/rope_scaling must be an object")
    theta = _field(params, "rope_theta", float) or _field(d, "rope_theta", float, 10000.0)
    kind = params.get("rope_type", params.get("type", "default"))
    if kind in (None, "default"):
        return theta, None
    if kind != "llama3":
        raise ConfigError(f"config.json: rope type {kind!r} is not supported (only default and llama3)")
    return theta, RopeScaling(
        factor=_field(params, "factor", float, required=True),
        low_freq_factor=_field(params, "low_freq_factor", float, required=True),
        high_freq_factor=_field(params, "high_freq_factor", float, required=True),
        original_max_position_embeddings=_field(params, "original_max_position_embeddings", int,
                                                required=True))


def _eos(value) -> tuple[int, ...]:
    if value is None:
        return ()
    ids = [value] if isinstance(value, int) else value
    if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise ConfigError(f"config.json: eos_token_id must be an int or a list of ints, got {value!r}")
    return tuple(ids)


def from_hf_dict(d: dict) -> ModelConfig:
    model_type = d.get("model_type")
    if model_type != "llama":
        raise ConfigError(f"config.json: model_type {model_type!r} is not supported (only 'llama')")
    if d.get("hidden_act", "silu") != "silu":
        raise ConfigError(f"config.json: hidden_act {d['hidden_act']!r} is not supported (only silu)")
    for key in ("attention_bias", "mlp_bias"):
        if d.get(key):
            raise ConfigError(f"config.json: {key}=true is not supported")
    hidden = _field(d, "hidden_size", int, required=True)
    heads = _field(d, "num_attention_heads", int, required=True)
    if heads <= 0 or hidden % heads and "head_dim" not in d:
        raise ConfigError(f"config.json: hidden_size {hidden} not divisible by num_attention_heads {heads}")
    theta, scaling = _rope(d)
    return ModelConfig(
        vocab_size=_field(d, "vocab_size", int, required=True),
        hidden_size=hidden,
        intermediate_size=_field(d, "intermediate_size", int, required=True),
        num_layers=_field(d, "num_hidden_layers", int, required=True),
        num_heads=heads,
        num_kv_heads=_field(d, "num_key_value_heads", int, heads),
        head_dim=_field(d, "head_dim", int, hidden // heads),
        max_position=_field(d, "max_position_embeddings", int, 2048),
        rms_norm_eps=_field(d, "rms_norm_eps", float, 1e-6),
        rope_theta=theta,
        rope_scaling=scaling,
        tie_embeddings=_field(d, "tie_word_embeddings", bool, False),
        bos_token_id=_field(d, "bos_token_id", int),
        eos_token_ids=_eos(d.get("eos_token_id")),
    )


def load_model_config(folder: str | Path) -> ModelConfig:
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise ConfigError(f"{folder}: no config.json (expected an HF model folder)")
    return from_hf_dict(read_json_object(path))


def read_json_object(path: Path) -> dict:
    """A model folder's JSON file (config.json, hf_quant_config.json), which must hold an object."""
    try:
        d = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(d, dict):
        raise ConfigError(f"{path}: expected a JSON object")
    return d
