"""Dataset loaders: the synthetic default, MLPerf's preprocessed cnn_eval.json, raw CNN/DailyMail.

Formats are told apart by content, not by file name:
- a JSON list (or JSONL) of records with `tok_input` and `output`: MLPerf's preprocessed
  `cnn_eval.json` or its 5,000-sample edge file; the prompt ids are used as they are;
- records with `article` and `highlights` (JSON, JSONL, parquet, arrow, or a `datasets`
  save_to_disk folder, whose `validation` split is read): prompts are built with MLPerf's template
  and tokenized here (needs a tokenizer).

Prompts longer than the limit (MLPerf's 2540 tokens, or less when the model's context is shorter)
are dropped and each one is named in `Dataset.notes`. Dropping rather than failing lets a run go on
with a short-context model; the notes say the set is then not MLPerf's full set, and the accuracy
evaluation, which loads the dataset the same way, stays aligned with the kept samples.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from llmbench.coordinator.data import prompt
from llmbench.coordinator.data.dataset import Dataset

SYNTHETIC_SAMPLES = 1000
SYNTHETIC_MAX = 100_000  # ~0.7 GB of prompts; every one is made before the run
LLAMA3_VOCAB = 128256


@dataclass(frozen=True)
class RecordFormat:
    """A kind of record a dataset file may hold, told by its key field in record 0."""
    key: str  # the field that marks it
    label: str  # for the error that lists what is expected
    build: Callable[..., Dataset]  # (path, records, tokenizer, vocab_size) -> Dataset


FORMATS: list[RecordFormat] = []  # tried in order


def record_format(key: str, label: str):
    """Registers a builder: a new format is its function and this decorator."""
    def register(build: Callable[..., Dataset]) -> Callable[..., Dataset]:
        FORMATS.append(RecordFormat(key, label, build))
        return build
    return register


def load(spec: str, *, tokenizer: str | None = None, max_samples: int | None = None,
         vocab_size: int | None = None, seed: int = 0, max_prompt_tokens: int | None = None) -> Dataset:
    """Load the dataset named by `spec`: "synthetic" or a path (file or folder).

    tokenizer: model folder, tokenizer folder or tiktoken file; needed for raw articles.
    max_samples: keep the first N samples in dataset order. vocab_size: the model's, checked against
    the tokenizer and the token ids. max_prompt_tokens: defaults to MLPerf's 2540; give less for a
    model whose context cannot hold 2540 + max_new_tokens (longer prompts are dropped and noted)."""
    if max_samples is not None and max_samples < 1:
        raise ValueError(f"--max-samples must be at least 1, got {max_samples}")
    if spec == "synthetic":
        from llmbench.coordinator.data.synthetic import make_synthetic
        limits = {"max_len": max_prompt_tokens} if max_prompt_tokens else {}
        return make_synthetic(max_samples or SYNTHETIC_SAMPLES, vocab_size or LLAMA3_VOCAB, seed, **limits)
    path = Path(spec)
    if not path.exists():
        raise FileNotFoundError(f"--dataset {path} does not exist (give a file, a folder, or 'synthetic')")
    try:
        records = read_records(path)
    except OSError as exc:
        if exc.errno is None:  # raised here, with its own message
            raise
        raise ValueError(f"--dataset {path}: cannot read it ({exc.strerror})") from None  # permissions, I/O
    if not records:
        raise ValueError(f"--dataset {path} holds no records")
    limit = max_prompt_tokens or prompt.MAX_PROMPT_TOKENS
    if not isinstance(records[0], dict):
        raise ValueError(f"--dataset {path} record 0 is {type(records[0]).__name__}, not an object")
    found = next((f for f in FORMATS if f.key in records[0]), None)
    if found is None:
        raise ValueError(f"--dataset {path} record 0 has fields {sorted(records[0])}: expected "
                         f"{' or '.join(f.label for f in FORMATS)}")
    dataset = found.build(path, records[:max_samples], tokenizer, vocab_size)
    if max_samples is not None and max_samples > len(records):
        dataset.notes.append(f"--max-samples {max_samples:,}: {path.name} holds {len(records):,} records, "
                             f"all of them are used")
    return drop_long(dataset, limit)


def require(path: Path, records: list[dict], fields: tuple[str, ...]) -> None:
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            raise ValueError(f"--dataset {path} record {i} is {type(rec).__name__}, not an object")
        for name in fields:
            if name not in rec:
                raise ValueError(f"--dataset {path} record {i} has no field '{name}'")
            if name != "tok_input" and not isinstance(rec[name], str):
                raise ValueError(f"--dataset {path} record {i} field '{name}' is not a string")


@record_format("tok_input", "MLPerf's 'tok_input'/'output'")
def from_preprocessed(path: Path, records: list[dict], tokenizer: str | None, vocab_size: int | None) -> Dataset:
    """MLPerf's preprocessed cnn_eval.json (or its edge file): the prompt ids are used as they are."""
    require(path, records, ("tok_input", "output"))
    prompts = []
    for i, rec in enumerate(records):
        ids = rec["tok_input"]
        if not isinstance(ids, list) or not ids:
            raise ValueError(f"--dataset {path} record {i} field 'tok_input' is not a non-empty list of token ids")
        # bool is an int in Python: true/false would pass as ids 1 and 0
        bad = next(((k, t) for k, t in enumerate(ids) if type(t) is not int or not 0 <= t < 2**31), None)
        if bad is not None:
            k, value = bad
            kind = " (a boolean)" if isinstance(value, bool) else ""
            raise ValueError(f"--dataset {path} record {i} field 'tok_input' is not a non-empty list of token ids: "
                             f"item {k} is {json.dumps(value)}{kind}")
        prompts.append(np.asarray(ids, dtype=np.int32))
    dataset = Dataset(name=f"mlperf:{path.name}", prompts=prompts, references=[r["output"] for r in records])
    if vocab_size is not None:
        check_vocabulary(dataset, vocab_size, str(path))
    return dataset


def check_vocabulary(dataset: Dataset, vocab_size: int, source: str) -> None:
    """Every prompt id must be one of the model's."""
    for i, ids in enumerate(dataset.prompts):
        top = int(ids.max())
        if top < vocab_size:
            continue
        if dataset.tokenized_by is not None:  # ids made here from text: the file has no tok_input to blame
            tokenizer, tokens = dataset.tokenized_by
            raise ValueError(f"--tokenizer {tokenizer} does not fit the model: its ids go up to {tokens - 1} "
                             f"({tokens} tokens) but the model's vocabulary is {vocab_size}; --dataset {source} "
                             f"record {i} tokenizes to id {top}: give the model's own tokenizer")
        raise ValueError(f"--dataset {source} record {i} field 'tok_input' has token id {top}, outside the "
                         f"model's vocabulary ({vocab_size}): the file was made with another tokenizer")


def fit_model(dataset: Dataset, vocab_size: int, max_prompt_tokens: int, source: str) -> Dataset:
    """A copy of a loaded dataset for a model: its ids checked against the vocabulary, prompts longer
    than max_prompt_tokens dropped (and noted)."""
    check_vocabulary(dataset, vocab_size, source)
    copy = replace(dataset, prompts=list(dataset.prompts), notes=list(dataset.notes),
                   references=None if dataset.references is None else list(dataset.references))
    return drop_long(copy, max_prompt_tokens)


@record_format("article", "CNN/DailyMail's 'article'/'highlights'")
def from_articles(path: Path, records: list[dict], tokenizer: str | None, vocab_size: int | None) -> Dataset:
    """Raw CNN/DailyMail records: prompts built with MLPerf's template and tokenized here."""
    require(path, records, ("article", "highlights"))
    if tokenizer is None:
        raise ValueError(f"--dataset {path} holds raw articles: give --tokenizer PATH (a model folder, a tokenizer "
                         f"folder or a Llama-3 tokenizer.model) to build the prompts")
    tok = prompt.load_tokenizer(tokenizer, vocab_size)
    prompts = [prompt.encode_prompt(tok, rec["article"]) for rec in records]
    return Dataset(name=f"cnndm:{path.name}", prompts=prompts, references=[r["highlights"] for r in records],
                   tokenized_by=(tokenizer, tok.vocab_size))


def drop_long(dataset: Dataset, limit: int) -> Dataset:
    keep = [i for i, p in enumerate(dataset.prompts) if len(p) <= limit]
    if len(keep) == len(dataset.prompts):
        return dataset
    if not keep:
        raise ValueError(f"dataset {dataset.name}: every prompt is longer than {limit} tokens")
    kept = set(keep)
    dropped = [i for i in range(len(dataset.prompts)) if i not in kept]
    shown = ", ".join(f"#{i} ({len(dataset.prompts[i])} tokens)" for i in dropped[:10])
    more = f" and {len(dropped) - 10} more" if len(dropped) > 10 else ""
    dataset.notes.append(f"REFUSED {len(dropped)} of {len(dataset.prompts)} prompts over {limit} tokens: "
                         f"{shown}{more}; the run is not over the full dataset")
    dataset.prompts = [dataset.prompts[i] for i in keep]
    if dataset.references is not None:
        dataset.references = [dataset.references[i] for i in keep]
    return dataset


def read_records(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSON/JSONL/parquet/arrow file or a folder of them, as dicts, in file order."""
    if path.is_dir():
        return read_folder(path)
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return read_parquet([path])
    if suffix == ".arrow":
        return read_arrow([path])
    return read_json(path)


def read_json(path: Path) -> list[dict[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"--dataset {path}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start}); "
                         f"expected JSON or JSONL, .parquet, .arrow or a save_to_disk folder") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = None
        rows = []
        for lineno, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise ValueError(f"--dataset {path} line {lineno}: not JSON or JSONL ({exc.msg})") from None
        data = rows
    if isinstance(data, dict) and data:  # also a single JSONL line, or pandas' column-oriented to_json
        columns = list(data.values())
        if all(isinstance(c, dict) for c in columns):
            index = list(columns[0])
            data = [{name: data[name].get(k) for name in data} for k in index]
        else:
            data = [data]
    if not isinstance(data, list):
        raise ValueError(f"--dataset {path}: expected a JSON list of records, got {type(data).__name__}")
    return data


def read_folder(path: Path) -> list[dict[str, Any]]:
    if (path / "dataset_dict.json").exists() or (path / "state.json").exists():  # written by save_to_disk
        return read_saved_dataset(path)
    for ext, reader in (("parquet", read_parquet), ("arrow", read_arrow)):
        files = sorted(path.rglob(f"*.{ext}"))
        validation = [f for f in files if "validation" in f.relative_to(path).as_posix()]
        if files:
            return reader(validation or files)
    raise FileNotFoundError(f"--dataset {path}: the folder has no save_to_disk metadata, parquet or arrow files")


def read_saved_dataset(path: Path) -> list[dict[str, Any]]:
    try:
        import datasets
    except ImportError:
        raise ImportError(f"--dataset {path} is a `datasets` save_to_disk folder: install the extra "
                          f"`pip install 'llmbench[data]'` to read it") from None
    ds = datasets.load_from_disk(str(path))
    if isinstance(ds, datasets.DatasetDict):
        if "validation" not in ds:
            raise ValueError(f"--dataset {path} has splits {sorted(ds)}, no 'validation'")
        ds = ds["validation"]
    return ds.to_list()


def arrow_module(files: list[Path]):
    try:
        import pyarrow
        return pyarrow
    except ImportError:
        raise ImportError(f"--dataset {files[0]} needs pyarrow: install the extra `pip install 'llmbench[data]'`") from None


def read_parquet(files: list[Path]) -> list[dict[str, Any]]:
    pa = arrow_module(files)
    import pyarrow.parquet as pq
    tables = []
    for f in files:
        try:
            tables.append(pq.read_table(f))
        except pa.ArrowException as exc:
            raise ValueError(f"--dataset {f}: not a readable Parquet file ({exc})") from None
    return pa.concat_tables(tables).to_pylist()


def read_arrow(files: list[Path]) -> list[dict[str, Any]]:
    pa = arrow_module(files)
    tables = []
    for f in files:  # `datasets` writes the stream format; plain Arrow IPC files are the file format
        with pa.memory_map(str(f)) as source:
            try:
                tables.append(pa.ipc.open_stream(source).read_all())
            except pa.ArrowInvalid:
                source.seek(0)
                try:
                    tables.append(pa.ipc.open_file(source).read_all())
                except pa.ArrowException as exc:
                    raise ValueError(f"--dataset {f}: not an Arrow file, stream or IPC format ({exc})") from None
    return pa.concat_tables(tables).to_pylist()
