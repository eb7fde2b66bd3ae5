"""datasets.load in every supported format, and its errors on bad input."""
import json
import sys

import numpy as np
import pytest

from llmbench.coordinator.data import loaders, prompt
from tokenizers_offline import tiny_tokenizer

ARTICLES = [
    {"id": "a0", "article": "The mayor said on Monday that the city would open two new schools.",
     "highlights": "City to open two schools.\nMayor announced it Monday."},
    {"id": "a1", "article": "Police arrested a man, 34, after a crash on the highway.", "highlights": "Man arrested."},
    {"id": "a2", "article": "Shares of the company rose 4 percent after record earnings.", "highlights": "Shares rose."},
]
PREPROCESSED = [
    {"instruction": {"llama": prompt.TEMPLATE}, "input": "first", "tok_input": [128000, 5, 6, 7], "output": "one"},
    {"instruction": {"llama": prompt.TEMPLATE}, "input": "second", "tok_input": [128000, 8], "output": "two"},
    {"instruction": {"llama": prompt.TEMPLATE}, "input": "third", "tok_input": [128000, 9, 10], "output": "three"},
]


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    return tiny_tokenizer(tmp_path_factory.mktemp("tok") / "tok")


def expected_prompts(tok_dir, records=ARTICLES):
    tok = prompt.load_tokenizer(tok_dir)
    return [prompt.encode_prompt(tok, r["article"]).tolist() for r in records]


def assert_articles(data, tok_dir, records=ARTICLES):
    assert [p.tolist() for p in data.prompts] == expected_prompts(tok_dir, records)
    assert all(p.dtype == np.int32 for p in data.prompts)
    assert data.references == [r["highlights"] for r in records]


def test_synthetic_is_the_default_dataset():
    data = loaders.load("synthetic", max_samples=7, vocab_size=1000, seed=3)
    assert len(data) == 7 and data.references is None
    assert all(int(p.max()) < 1000 for p in data.prompts)
    assert len(loaders.load("synthetic", max_samples=20, vocab_size=1000, max_prompt_tokens=300).prompts[0]) <= 300


@pytest.mark.parametrize("name", ["cnn_eval.json", "sample_cnn_eval_5000.json", "renamed.data"])
def test_mlperf_preprocessed_file_detected_by_content(tmp_path, name):
    path = tmp_path / name
    path.write_text(json.dumps(PREPROCESSED, indent=4))
    data = loaders.load(str(path), vocab_size=128256)
    assert [p.tolist() for p in data.prompts] == [r["tok_input"] for r in PREPROCESSED]
    assert data.references == ["one", "two", "three"] and data.name == f"mlperf:{name}"
    assert [p.tolist() for p in loaders.load(str(path), max_samples=2).prompts] == [[128000, 5, 6, 7], [128000, 8]]
    assert not loaders.load(str(path), max_samples=3).notes
    more = loaders.load(str(path), max_samples=5000)  # used to take the 3 records silently
    assert len(more) == 3 and more.notes == [f"--max-samples 5,000: {name} holds 3 records, all of them are used"]


def test_mlperf_file_in_pandas_column_layout(tmp_path):
    columns = {key: {str(i): r[key] for i, r in enumerate(PREPROCESSED)} for key in PREPROCESSED[0]}
    path = tmp_path / "cnn_eval.json"
    path.write_text(json.dumps(columns))
    data = loaders.load(str(path))
    assert [p.tolist() for p in data.prompts] == [r["tok_input"] for r in PREPROCESSED]
    assert data.references == ["one", "two", "three"]


def test_articles_jsonl_and_json(tmp_path, tok_dir):
    jsonl = tmp_path / "validation.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in ARTICLES))
    assert_articles(loaders.load(str(jsonl), tokenizer=str(tok_dir)), tok_dir)
    as_list = tmp_path / "validation.json"
    as_list.write_text(json.dumps(ARTICLES))
    assert_articles(loaders.load(str(as_list), tokenizer=str(tok_dir), max_samples=2), tok_dir, ARTICLES[:2])


def test_articles_parquet_file_and_folder_prefers_validation(tmp_path, tok_dir):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq
    pq.write_table(pa.Table.from_pylist(ARTICLES), tmp_path / "validation-00000-of-00001.parquet")
    assert_articles(loaders.load(str(tmp_path / "validation-00000-of-00001.parquet"), tokenizer=str(tok_dir)), tok_dir)
    folder = tmp_path / "cnn_dailymail" / "3.0.0"
    folder.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(ARTICLES[:2]), folder / "validation-00000-of-00002.parquet")
    pq.write_table(pa.Table.from_pylist(ARTICLES[2:]), folder / "validation-00001-of-00002.parquet")
    pq.write_table(pa.Table.from_pylist([ARTICLES[2]] * 5), folder / "train-00000-of-00001.parquet")
    assert_articles(loaders.load(str(tmp_path / "cnn_dailymail"), tokenizer=str(tok_dir)), tok_dir)


def test_articles_arrow_stream_and_file_formats(tmp_path, tok_dir):
    pa = pytest.importorskip("pyarrow")
    table = pa.Table.from_pylist(ARTICLES)
    with pa.OSFile(str(tmp_path / "stream.arrow"), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    with pa.OSFile(str(tmp_path / "file.arrow"), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    for name in ("stream.arrow", "file.arrow"):
        assert_articles(loaders.load(str(tmp_path / name), tokenizer=str(tok_dir)), tok_dir)
    cache = tmp_path / "hf_cache" / "3.0.0" / "abc123"  # the layout of a `datasets` cache folder
    cache.mkdir(parents=True)
    (cache / "dataset_info.json").write_text("{}")
    (tmp_path / "stream.arrow").rename(cache / "cnn_dailymail-validation.arrow")
    (tmp_path / "file.arrow").rename(cache / "cnn_dailymail-train.arrow")
    assert_articles(loaders.load(str(tmp_path / "hf_cache"), tokenizer=str(tok_dir)), tok_dir)


def test_datasets_save_to_disk_folders(tmp_path, tok_dir):
    hf = pytest.importorskip("datasets")
    splits = hf.DatasetDict({"train": hf.Dataset.from_list(ARTICLES[:1]), "validation": hf.Dataset.from_list(ARTICLES)})
    splits.save_to_disk(str(tmp_path / "dict"))
    assert_articles(loaders.load(str(tmp_path / "dict"), tokenizer=str(tok_dir)), tok_dir)
    hf.Dataset.from_list(ARTICLES).save_to_disk(str(tmp_path / "single"))
    assert_articles(loaders.load(str(tmp_path / "single"), tokenizer=str(tok_dir)), tok_dir)
    hf.DatasetDict({"train": hf.Dataset.from_list(ARTICLES)}).save_to_disk(str(tmp_path / "notvalid"))
    with pytest.raises(ValueError, match="no 'validation'"):
        loaders.load(str(tmp_path / "notvalid"), tokenizer=str(tok_dir))


def test_long_prompts_are_refused_with_a_note(tmp_path):
    path = tmp_path / "cnn_eval.json"
    path.write_text(json.dumps(PREPROCESSED))
    data = loaders.load(str(path), max_prompt_tokens=3)
    assert [p.tolist() for p in data.prompts] == [[128000, 8], [128000, 9, 10]]
    assert data.references == ["two", "three"]
    assert len(data.notes) == 1 and "REFUSED 1 of 3" in data.notes[0] and "#0 (4 tokens)" in data.notes[0]
    with pytest.raises(ValueError, match="every prompt is longer than 1 tokens"):
        loaders.load(str(path), max_prompt_tokens=1)


def test_default_limit_is_mlperf_2540(tmp_path):
    records = [dict(PREPROCESSED[0], tok_input=[128000] + [5] * 2539), dict(PREPROCESSED[1], tok_input=[128000] + [5] * 2540)]
    path = tmp_path / "cnn_eval.json"
    path.write_text(json.dumps(records))
    data = loaders.load(str(path))
    assert [len(p) for p in data.prompts] == [2540] and "over 2540 tokens" in data.notes[0]


@pytest.mark.parametrize("content, message", [
    ('{"not": "records"}', r"record 0 has fields \['not'\]"),
    ("[[1, 2, 3]]", "record 0 is list, not an object"),
    ('"text"', "expected a JSON list of records, got str"),
    ("[]", "holds no records"),
    ('{"article": "a", "highlights": "b"}\nnot json\n', "line 2: not JSON or JSONL"),
    (json.dumps([PREPROCESSED[0], {"tok_input": [1, 2]}]), "record 1 has no field 'output'"),
    (json.dumps([dict(PREPROCESSED[0], tok_input="1 2 3")]), "record 0 field 'tok_input' is not a non-empty list"),
    (json.dumps([dict(PREPROCESSED[0], output=7)]), "record 0 field 'output' is not a string"),
    (json.dumps([ARTICLES[0], {"article": "x"}]), "record 1 has no field 'highlights'"),
])
def test_bad_files_name_the_file_and_field(tmp_path, tok_dir, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=message) as err:
        loaders.load(str(path), tokenizer=str(tok_dir))
    assert str(path) in str(err.value)


def test_bad_paths_and_mismatched_vocabularies(tmp_path, tok_dir):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        loaders.load(str(tmp_path / "missing.json"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no save_to_disk metadata, parquet or arrow"):
        loaders.load(str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="at least 1"):
        loaders.load("synthetic", max_samples=0)
    mlperf = tmp_path / "cnn_eval.json"
    mlperf.write_text(json.dumps(PREPROCESSED))
    with pytest.raises(ValueError, match=r"record 0 field 'tok_input' has token id 128000, outside .* \(32000\)"):
        loaders.load(str(mlperf), vocab_size=32000)
    articles = tmp_path / "articles.jsonl"
    articles.write_text(json.dumps(ARTICLES[0]) + "\n")
    with pytest.raises(ValueError, match="raw articles: give --tokenizer"):
        loaders.load(str(articles))
    with pytest.raises(ValueError, match="do not belong together"):
        loaders.load(str(articles), tokenizer=str(tok_dir), vocab_size=10)


def test_a_tokenizer_the_model_lacks_ids_of_is_named_not_a_tok_input_field(tmp_path, tok_dir):
    """The ids of raw articles are the tokenizer's: the error used to blame record 0's 'tok_input'."""
    articles = tmp_path / "articles.jsonl"
    articles.write_text("".join(json.dumps(r) + "\n" for r in ARTICLES))
    data = loaders.load(str(articles), tokenizer=str(tok_dir))  # the model's vocabulary is not known yet
    tokens = prompt.load_tokenizer(tok_dir).vocab_size
    with pytest.raises(ValueError) as err:
        loaders.fit_model(data, 100, prompt.MAX_PROMPT_TOKENS, str(articles))
    top = max(expected_prompts(tok_dir)[0])
    assert str(err.value) == (f"--tokenizer {tok_dir} does not fit the model: its ids go up to {tokens - 1} "
                              f"({tokens} tokens) but the model's vocabulary is 100; --dataset {articles} "
                              f"record 0 tokenizes to id {top}: give the model's own tokenizer")


def test_missing_optional_readers_name_the_extra(tmp_path, monkeypatch):
    (tmp_path / "x.parquet").write_bytes(b"PAR1")
    (tmp_path / "saved").mkdir()
    (tmp_path / "saved" / "dataset_dict.json").write_text('{"splits": ["validation"]}')
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(ImportError, match=r"llmbench\[data\]"):
        loaders.load(str(tmp_path / "x.parquet"))
    with pytest.raises(ImportError, match=r"save_to_disk folder: install the extra .*llmbench\[data\]"):
        loaders.load(str(tmp_path / "saved"))
