"""MLPerf prompt building and tokenizer loading (coordinator/data/prompt.py)."""
import json

import numpy as np
import pytest

from llmbench.coordinator.data import prompt
from tokenizers_offline import EOS, SHARED_DATA, TEXTS, llama3_tokenizer_file, tiny_tokenizer

def test_prompt_is_mlperf_template_with_one_bos(tmp_path):
    folder = tiny_tokenizer(tmp_path / "tok", add_bos=True)
    tok = prompt.load_tokenizer(folder)
    article = "The mayor said on Monday that the city would open two new schools."
    ids = prompt.encode_prompt(tok, article)
    from transformers import AutoTokenizer
    hf = AutoTokenizer.from_pretrained(folder)
    text = ("Summarize the following news article in 128 tokens. Please output the summary only, without any other "
            f"text.\n\nArticle:\n{article}\n\nSummary:")
    assert prompt.build_prompt(article) == text
    expected = hf(text)["input_ids"]  # the tokenizer adds BOS itself here
    assert expected[0] == hf.bos_token_id
    assert ids.dtype == np.int32 and ids.tolist() == expected
    assert ids.tolist().count(hf.bos_token_id) == 1


def test_bos_prepended_when_tokenizer_does_not_add_it(tmp_path):
    tok = prompt.load_tokenizer(tiny_tokenizer(tmp_path / "tok", add_bos=False))
    ids = prompt.encode_prompt(tok, "Shares rose.")
    assert ids[0] == tok.bos_id and ids.tolist().count(tok.bos_id) == 1
    assert ids[1:].tolist() == tok.encode(prompt.build_prompt("Shares rose."))


def test_decode_skips_special_tokens_and_applies_configured_clean_up(tmp_path):
    plain = prompt.load_tokenizer(tiny_tokenizer(tmp_path / "plain"))
    cleaned = prompt.load_tokenizer(tiny_tokenizer(tmp_path / "cleaned", clean_up=True))
    text = "He isn't hurt , officials said ."
    ids = [plain.bos_id, *plain.encode(text), plain.tok.convert_tokens_to_ids(EOS)]
    assert plain.decode(ids) == text
    assert cleaned.decode(ids) == "He isn't hurt, officials said."


def test_tokenizer_vocab_larger_than_model_is_refused(tmp_path):
    folder = tiny_tokenizer(tmp_path / "tok")
    n = prompt.load_tokenizer(folder).vocab_size
    assert prompt.load_tokenizer(folder, vocab_size=n + 10).vocab_size == n  # padded model vocab is fine
    with pytest.raises(ValueError, match=r"vocab_size given"):
        prompt.load_tokenizer(folder, vocab_size=n - 1)
    (folder / "config.json").write_text(json.dumps({"vocab_size": n - 5}))
    with pytest.raises(ValueError, match=r"config\.json field vocab_size"):
        prompt.load_tokenizer(folder)


def test_missing_or_empty_tokenizer_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        prompt.load_tokenizer(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no tokenizer in"):
        prompt.load_tokenizer(tmp_path / "empty")
    bad = tmp_path / "tokenizer.model"
    bad.write_bytes(b"\x00\x01 not a tokenizer")
    with pytest.raises(ValueError) as err:
        prompt.load_tokenizer(bad)
    message = str(err.value)  # one line naming the file given, not its folder
    assert message.startswith(f"--tokenizer {bad}: cannot load a tokenizer from it: ") and "\n" not in message
    for text in ("not a tokenizer", "{}", '{"model": 3}'):  # JSON, or not, that is no tokenizers file
        (tmp_path / "tokenizer.json").write_text(text)
        with pytest.raises(ValueError, match=f"^--tokenizer {tmp_path / 'tokenizer.json'}: not a tokenizer: neither "
                                             f"a tokenizers JSON file"):
            prompt.load_tokenizer(tmp_path / "tokenizer.json")


def test_tiktoken_file_matches_llama_models():
    path = llama3_tokenizer_file()
    from llama_models.llama3.tokenizer import Tokenizer as MetaTokenizer
    meta = MetaTokenizer(path)
    tok = prompt.load_tokenizer(path, vocab_size=128256)
    assert (tok.vocab_size, tok.bos_id) == (128256, 128000)
    for text in TEXTS:
        ids = prompt.encode_prompt(tok, text).tolist()
        assert ids == meta.encode(prompt.build_prompt(text), bos=True, eos=False)
        assert tok.decode(ids + [128009]) == prompt.build_prompt(text)  # special tokens skipped
    assert prompt.load_tokenizer(path.parent).vocab_size == 128256  # a folder holding tokenizer.model
    with pytest.raises(ValueError, match="128256 tokens"):
        prompt.load_tokenizer(path, vocab_size=32000)


def test_real_articles_prompt_statistics():
    path = llama3_tokenizer_file()
    if not SHARED_DATA.is_file():
        pytest.skip("../shared/data is absent")
    from llmbench.coordinator.data import loaders
    data = loaders.load(str(SHARED_DATA), tokenizer=str(path), vocab_size=128256)
    lengths = np.array([len(p) for p in data.prompts])
    assert len(data) == 1000 and not data.notes
    assert all(p[0] == 128000 and (p == 128000).sum() == 1 for p in data.prompts)
    assert round(lengths.mean()) == 833 and lengths.max() == 2267 and lengths.min() == 141
    assert abs(np.median(lengths) - 766) <= 1
