"""The agent over the real paged engine: a tiny HF folder (with a tokenizer) and the `tiny` preset."""
import functools
import json
import threading

import grpc
import pytest
import torch

from llmbench.agent.engine.types import token_runs
from llmbench.proto import pb, rpc
from cli_processes import llmbench

WORDS = ["the", "cat", "sat", "on", "a", "mat", "dog", "ran", "far", "away"]


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    """A random 2-layer Llama saved by transformers, with a WordLevel tokenizer that adds BOS."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    path = tmp_path_factory.mktemp("tiny-hf")
    vocab = {w: i for i, w in enumerate(["<unk>", "<s>", "</s>", *WORDS, *(f"w{i}" for i in range(243))])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                            unk_token="<unk>").save_pretrained(path)
    cfg = LlamaConfig(vocab_size=len(vocab), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      bos_token_id=1, eos_token_id=2)
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(path)
    return path


@functools.cache
def hf_model(folder):
    from transformers import LlamaForCausalLM
    return LlamaForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()


def hf_greedy(folder, prompt: list[int], n: int) -> list[int]:
    model = hf_model(folder)
    ids = torch.tensor([prompt])
    with torch.no_grad():
        for _ in range(n):
            ids = torch.cat([ids, model(ids).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return ids[0, len(prompt):].tolist()


@pytest.mark.slow
def test_agent_on_hf_folder_matches_transformers(agents, hf_folder):
    from transformers import AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(hf_folder, local_files_only=True)
    agent = agents("--model", str(hf_folder), "--device", "cpu", "--num-kv-blocks", "128")
    agent.wait_serving()
    with grpc.insecure_channel(agent.address) as ch:
        stub = rpc.AgentStub(ch)
        status = next(stub.WatchStatus(pb.StatusRequest(), timeout=30))
        assert (status.model.name, status.model.engine, status.model.vocab_size) == (hf_folder.name, "paged", 256)
        assert status.ready and status.kv_blocks_total == 128 and list(status.model.eos_token_ids) == [2]

        msgs = list(stub.Generate(pb.GenerateRequest(text="the cat sat on a mat", max_new_tokens=10, ignore_eos=True),
                                  timeout=60))
        prompt = tokenizer.encode("the cat sat on a mat")
        assert prompt[0] == 1
        tokens = [t for m in msgs for t in m.tokens]
        assert tokens == hf_greedy(hf_folder, prompt, 10)
        assert msgs[-1].finish_reason == pb.FINISH_REASON_LENGTH
        assert msgs[-1].text == tokenizer.decode(tokens, skip_special_tokens=True) != ""

        prompts = {i: [1] + [3 + (i * 7 + j) % 250 for j in range(5 + 3 * i)] for i in range(6)}
        all_done = threading.Event()

        def requests():
            yield pb.ServeRequest(submit=pb.QueryBatch(queries=[
                pb.Query(id=i, prompt_tokens=p, max_new_tokens=6, ignore_eos=True) for i, p in prompts.items()]))
            all_done.wait(60)  # closing the request side earlier would cancel the queries

        got: dict[int, list[int]] = {}
        finished: set[int] = set()
        for r in stub.Serve(requests(), timeout=60):
            for qid, tokens in token_runs(r):
                got.setdefault(qid, []).extend(tokens)
            finished.update(r.finished_ids)
            if len(finished) == len(prompts):
                all_done.set()
        assert got == {i: hf_greedy(hf_folder, p, 6) for i, p in prompts.items()}

        with pytest.raises(grpc.RpcError) as err:
            list(stub.Generate(pb.GenerateRequest(tokens=pb.TokenList(ids=[1] * 500), max_new_tokens=100)))
        assert err.value.code() == grpc.StatusCode.OUT_OF_RANGE

    lines = "".join(json.dumps({"id": i, "tokens": p}) + "\n" for i, p in prompts.items())
    lines += json.dumps({"id": "text", "text": "the dog ran far away"}) + "\n"
    remote = llmbench("generate", "--agent", agent.address, "--max-new-tokens", "6", "--ignore-eos", stdin=lines)
    assert remote.returncode == 0, remote.stderr
    rows = [json.loads(line) for line in remote.stdout.splitlines()]
    assert [r["tokens"] for r in rows[:-1]] == [got[i] for i in prompts]
    assert rows[-1]["text"] == tokenizer.decode(rows[-1]["tokens"], skip_special_tokens=True)
    assert agent.terminate() == 0

    local = llmbench("generate", "--model", str(hf_folder), "--num-kv-blocks", "128", "--max-new-tokens", "6",
                     "--ignore-eos", stdin=lines)
    assert local.returncode == 0, local.stderr
    assert [r["tokens"] for r in map(json.loads, local.stdout.splitlines())] == [r["tokens"] for r in rows]
    assert all("text" in json.loads(line) for line in local.stdout.splitlines())


@pytest.mark.slow
def test_agent_tiny_preset(agents):
    agent = agents("--model", "tiny", "--num-kv-blocks", "256")
    agent.wait_serving()
    lines = "".join(json.dumps({"id": i, "tokens": [1, 5 + i, 9, 11]}) + "\n" for i in range(12))
    out = llmbench("generate", "--agent", agent.address, "--max-new-tokens", "16", "--ignore-eos", stdin=lines)
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["id"] for r in rows] == list(range(12))
    assert all(len(r["tokens"]) == 16 and r["finish_reason"] == "length" for r in rows)
    assert all(0 <= t < 1000 for r in rows for t in r["tokens"])
    text = llmbench("generate", "--agent", agent.address, stdin='{"id": 0, "text": "hello"}\n')
    assert "model tiny has no tokenizer; send token ids" in text.stdout and text.returncode == 2
    assert agent.terminate() == 0
    # At its stop the agent logs what its steps cost, the table `llmbench bench` prints.
    log = agent.stderr()
    assert "step costs:" in log, log[-2000:]
    table = log[log.index("step costs:"):].splitlines()[1:]
    assert table[0].startswith("| step kind |") and any(r.startswith("| decode | batch ≤ ") for r in table)


@pytest.mark.slow
def test_agent_stops_cleanly_while_loading(agents):
    agent = agents("--model", "tiny", "--num-kv-blocks", "256")
    assert agent.terminate() == 0  # right after the listening line, the model is still loading
    assert "Traceback" not in agent.stderr()
