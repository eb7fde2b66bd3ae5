"""MLPerf's llama3.1-8b prompt and the tokenizers that turn it into token ids.

A tokenizer is loaded from local disk only: a Hugging Face model/tokenizer folder (transformers
AutoTokenizer, local_files_only) or a tiktoken BPE file such as Meta's Llama-3 `tokenizer.model`
(the one inside the PyPI package `llama-models`), or a folder holding such a file.
"""
from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np

TEMPLATE = (
    "Summarize the following news article in 128 tokens. Please output the summary only, without any "
    "other text.\n\nArticle:\n{article}\n\nSummary:"
)
MAX_PROMPT_TOKENS = 2540  # the longest prompt of MLPerf's 13,368 samples
LLAMA3_BOS = 128000
LLAMA3_NUM_SPECIAL = 256
# Meta's llama3 tokenizer: the regex that pre-splits text, and the named special tokens (the other
# ids up to 256 specials are reserved_special_token_N).
LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
    r"\s*[\r\n]+|\s+(?!\S)|\s+"
)
LLAMA3_SPECIAL = ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
                  "<|reserved_special_token_1|>", "<|finetune_right_pad_id|>", "<|step_id|>",
                  "<|start_header_id|>", "<|end_header_id|>", "<|eom_id|>", "<|eot_id|>",
                  "<|python_tag|>", "<|image|>"]


class Tokenizer(Protocol):
    path: str
    vocab_size: int  # number of ids it can produce, special tokens included
    bos_id: int | None

    def encode(self, text: str) -> list[int]:
        """Token ids of plain text, no special tokens added."""

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ids with special tokens skipped, as MLPerf's evaluation decodes."""


def build_prompt(article: str) -> str:
    return TEMPLATE.format(article=article)


def encode_prompt(tokenizer: Tokenizer, article: str) -> np.ndarray:
    """The prompt's ids with BOS prepended exactly once (MLPerf's tok_input), no truncation."""
    if tokenizer.bos_id is None:
        raise ValueError(f"tokenizer {tokenizer.path} has no BOS token (bos_token); MLPerf prompts start with one")
    return np.array([tokenizer.bos_id, *tokenizer.encode(build_prompt(article))], dtype=np.int32)


def clean_up_spaces(text: str) -> str:
    """transformers 4.x `clean_up_tokenization`, which MLPerf's reference decode (transformers 4.57,
    Llama-3.1 config clean_up_tokenization_spaces=true) applies; transformers 5 skips it for BPE."""
    for old, new in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                     (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")):
        text = text.replace(old, new)
    return text


class HFTokenizer:
    def __init__(self, path: Path, given: Path | None = None):
        """path: the folder to load; given: what --tokenizer named, if not that folder (for errors)."""
        try:
            from transformers import AutoTokenizer
            self.tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ValueError(f"--tokenizer {given or path}: cannot load a tokenizer from it: {first}") from exc
        self.path = str(path)
        self.vocab_size = len(self.tok)
        self.bos_id = self.tok.bos_token_id
        self.clean_up = bool(self.tok.init_kwargs.get("clean_up_tokenization_spaces", False))

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False)

    def decode(self, ids: Sequence[int]) -> str:
        text = self.tok.decode(list(ids), skip_special_tokens=True, clean_up_tokenization_spaces=False)
        return clean_up_spaces(text) if self.clean_up else text


class TiktokenTokenizer:
    """Meta's Llama-3 tokenizer file read with tiktoken (ids and special tokens as in llama-models)."""

    def __init__(self, path: Path):
        try:
            import tiktoken
        except ImportError as exc:
            raise ValueError(f"--tokenizer {path} is a tiktoken file; reading it needs `pip install tiktoken`") from exc
        ranks = read_tiktoken_ranks(path)
        n = len(ranks)
        special = LLAMA3_SPECIAL + [f"<|reserved_special_token_{i}|>"
                                    for i in range(2, LLAMA3_NUM_SPECIAL - len(LLAMA3_SPECIAL) + 2)]
        self.enc = tiktoken.Encoding(name=path.name, pat_str=LLAMA3_PATTERN, mergeable_ranks=ranks,
                                     special_tokens={tok: n + i for i, tok in enumerate(special)})
        self.path = str(path)
        self.n_base = n
        self.vocab_size = n + len(special)
        self.bos_id = n  # <|begin_of_text|>, 128000 for Llama 3
        self.clean_up = True  # as Llama-3.1's HF tokenizer_config.json says

    def encode(self, text: str) -> list[int]:
        return self.enc.encode(text, allowed_special=set(), disallowed_special=())

    def decode(self, ids: Sequence[int]) -> str:
        return clean_up_spaces(self.enc.decode([int(i) for i in ids if 0 <= i < self.n_base]))


def read_tiktoken_ranks(path: Path) -> dict[bytes, int]:
    ranks = {}
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                token, rank = line.split()
                ranks[base64.b64decode(token, validate=True)] = int(rank)
            except ValueError as exc:
                raise ValueError(f"--tokenizer {path} line {lineno}: not a tiktoken BPE file "
                                 f"('<base64> <rank>' lines)") from exc
    return ranks


def is_tiktoken_file(path: Path) -> bool:
    with open(path, "rb") as f:
        parts = f.readline().split()
    try:
        return len(parts) == 2 and bool(base64.b64decode(parts[0], validate=True)) and int(parts[1]) >= 0
    except ValueError:
        return False


def check_tokenizer_json(path: Path) -> None:
    """A JSON tokenizer file must be the `tokenizers` library's (with its 'model'); transformers' own error
    for any other would blame a missing tiktoken or sentencepiece."""
    try:
        data = json.loads(path.read_text(errors="replace"))
    except ValueError:
        data = None
    if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
        raise ValueError(f"--tokenizer {path}: not a tokenizer: neither a tokenizers JSON file (tokenizer.json, "
                         f"with a 'model') nor a tiktoken file (base64 token and rank per line)")


def load_tokenizer(path: str | Path, vocab_size: int | None = None) -> Tokenizer:
    """A tokenizer from a model folder, a tokenizer folder or a tiktoken file; local files only.

    The model's vocab_size (argument, else config.json beside the tokenizer) must cover every id
    the tokenizer can produce."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"--tokenizer {path} does not exist")
    if path.is_file():
        if is_tiktoken_file(path):
            tok: Tokenizer = TiktokenTokenizer(path)
        else:
            if path.suffix == ".json":
                check_tokenizer_json(path)
            tok = HFTokenizer(path.parent, given=path)
    elif (path / "tokenizer.json").exists() or (path / "tokenizer_config.json").exists():
        tok = HFTokenizer(path)
    else:
        files = [p for p in (path / "tokenizer.model", path / "original" / "tokenizer.model") if p.is_file()]
        if not files or not is_tiktoken_file(files[0]):
            raise FileNotFoundError(f"--tokenizer {path}: no tokenizer in the folder (expected tokenizer.json, "
                                    f"tokenizer_config.json or a tiktoken tokenizer.model)")
        tok = TiktokenTokenizer(files[0])
    config = (path if path.is_dir() else path.parent) / "config.json"
    source = "the vocab_size given"
    if vocab_size is None and config.is_file():
        vocab_size = json.loads(config.read_text()).get("vocab_size")
        source = f"{config} field vocab_size"
    if vocab_size is not None and tok.vocab_size > vocab_size:
        raise ValueError(f"tokenizer {tok.path} has {tok.vocab_size} tokens but the model's vocabulary is "
                         f"{vocab_size} ({source}): they do not belong together")
    return tok
