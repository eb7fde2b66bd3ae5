"""Tokenizers for tests, offline: a byte-level BPE trained here on a few sentences, llama-models'
Llama-3 tiktoken file, and where the real CNN/DailyMail records lie when ../shared is there."""
import json
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cnndm_validation_first1000.jsonl"
TEXTS = [
    "Summarize the following news article in 128 tokens. Please output the summary only, without any other text.",
    "Article: The mayor said on Monday that the city would open two new schools. Summary: new schools.",
    "Police arrested a man, 34, after a crash on the highway. He isn't hurt, officials said.",
    "Shares of the company rose 4 percent after it reported record earnings of $3.2 billion.",
]
BOS, EOS = "<|begin_of_text|>", "<|eot_id|>"


def tiny_tokenizer(folder: Path, *, add_bos: bool = True, clean_up: bool = False) -> Path:
    """A byte-level BPE trained on TEXTS, saved as a transformers tokenizer folder with config.json."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=[BOS, EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(TEXTS, trainer)
    if add_bos:  # like Llama-3's tokenizer.json: BOS added by the post-processor
        tok.post_processor = processors.TemplateProcessing(single=f"{BOS} $A", special_tokens=[(BOS, tok.token_to_id(BOS))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS,
                                   clean_up_tokenization_spaces=clean_up)
    fast.save_pretrained(folder)
    (folder / "config.json").write_text(json.dumps({"vocab_size": len(fast)}))
    return folder


def llama3_tokenizer_file() -> Path:
    pytest.importorskip("tiktoken")
    llama_models = pytest.importorskip("llama_models")
    path = Path(llama_models.__file__).parent / "llama3" / "tokenizer.model"
    if not path.is_file():
        pytest.skip("llama-models has no llama3/tokenizer.model")
    return path
