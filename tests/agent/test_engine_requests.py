"""Per-query validation errors, stop/EOS/min_new_tokens/ignore_eos semantics, cancel, failing steps."""
from __future__ import annotations

import json
import threading

import pytest
import torch

from llmbench.agent.engine.paged import PagedEngine
from llmbench.agent.engine.in_process import generate
from llmbench.agent.engine.types import EngineConfig, ErrorCode, FinishReason, Request, StepOutput

from hf_reference import hf_greedy, prompts, save_hf, start_engine


@pytest.fixture(scope="module")
def tiny():
    engine = PagedEngine(EngineConfig(model="tiny", device="cpu", max_context=512, num_kv_blocks=20,
                                      block_size=16, max_batch=8))
    engine.start()
    yield engine
    engine.stop()


def test_bad_requests_get_errors_and_good_one_completes(tiny):
    v = tiny.info.vocab_size
    reqs = [
        Request(id=1, prompt=[5, 6, 7], max_new_tokens=4),
        Request(id=2, prompt=[], max_new_tokens=4),
        Request(id=3, prompt=[5, v], max_new_tokens=4),
        Request(id=4, prompt=[-1, 5], max_new_tokens=4),
        Request(id=5, prompt=[5], max_new_tokens=0),
        Request(id=6, prompt=[5], max_new_tokens=4, min_new_tokens=-1),
        Request(id=7, prompt=[5] * 500, max_new_tokens=13),  # 513 > max_context 512
        Request(id=8, prompt=[5] * 300, max_new_tokens=100),  # 400 > 20 blocks x 16 = 320 KV tokens
        Request(id=9, prompt=[5], max_new_tokens=4, stop_ids=(v + 3,)),
        Request(id=1, prompt=[5, 6], max_new_tokens=4),  # same id as a running query
        Request(id=10, prompt=[5, "x"], max_new_tokens=4),
    ]
    outs: list[StepOutput] = []
    done = threading.Event()

    def sink(out: StepOutput) -> None:
        outs.append(out)
        if any(qid == 1 for qid, _ in out.finished):
            done.set()

    tiny.submit(reqs, sink)
    assert done.wait(30)
    errors = {qid: code for o in outs for qid, code, _ in o.errors}
    assert errors == {2: ErrorCode.INVALID_QUERY, 3: ErrorCode.INVALID_QUERY, 4: ErrorCode.INVALID_QUERY,
                      5: ErrorCode.INVALID_QUERY, 6: ErrorCode.INVALID_QUERY, 7: ErrorCode.TOO_LONG,
                      8: ErrorCode.TOO_LONG, 9: ErrorCode.INVALID_QUERY, 1: ErrorCode.DUPLICATE_ID,
                      10: ErrorCode.INVALID_QUERY}
    messages = {qid: msg for o in outs for qid, _, msg in o.errors}
    assert str(v) in messages[3] and "context of" in messages[7] and "KV blocks" in messages[8]
    assert sum(o.counts.count(1) for o in outs) == 4
    assert [f for o in outs for f in o.finished] == [(1, FinishReason.LENGTH)]
    assert all(len(o.ids) == len(o.counts) == len(o.tokens) for o in outs)
    steps = [o.step for o in outs]
    assert steps == sorted(steps) and len(set(steps)) == len(steps), "one StepOutput per sink per step"


def test_cancel_and_drop_sink_free_blocks(tiny):
    got: list[StepOutput] = []
    first = threading.Event()
    finished = threading.Event()

    def sink(out: StepOutput) -> None:
        got.append(out)
        first.set()
        if out.finished:
            finished.set()

    tiny.submit([Request(id=1, prompt=[9] * 20, max_new_tokens=250)], sink)
    assert first.wait(30)
    tiny.cancel([1, 12345], sink)
    assert finished.wait(30)
    assert got[-1].finished == [(1, FinishReason.CANCELLED)]
    assert 0 < sum(len(o.tokens) for o in got) < 250

    silent: list[StepOutput] = []
    tiny.submit([Request(id=i, prompt=[9] * 30, max_new_tokens=200) for i in range(3)], silent.append)
    tiny.drop_sink(silent.append)
    generate(tiny, [Request(id=0, prompt=[4], max_new_tokens=2)], timeout=30)  # the loop moved on
    assert not any(o.finished or o.errors for o in silent)
    st = tiny.stats()
    assert st.kv_blocks_free == st.kv_blocks_total and st.running == st.waiting == 0


@pytest.mark.parametrize("where", ["launch", "collect"])
@pytest.mark.parametrize("overlap", [False, True], ids=["waited", "overlapped"])
def test_failing_step_fails_its_queries_and_engine_keeps_serving(tiny, where, overlap):
    """A step that fails as it is launched (a bug in preparing it) or as it is read (a device error
    surfaces at the sync) fails the queries in it, once each, and the next queries are served."""
    real = getattr(tiny.runner, where)
    calls = []

    def broken(arg):
        calls.append(1)
        if len(calls) == 2:  # the second step: overlapped, the first is then still unread
            raise RuntimeError("boom")
        return real(arg)

    setattr(tiny.runner, where, broken)
    tiny.overlap = overlap
    try:
        failed = generate(tiny, [Request(id=1, prompt=[3, 4], max_new_tokens=3),
                                 Request(id=2, prompt=[5], max_new_tokens=1)], timeout=30)
        assert failed[1].error[0] == ErrorCode.INTERNAL and "boom" in failed[1].error[1]
        assert failed[2].finish == FinishReason.LENGTH and len(failed[2].tokens) == 1  # done in step 1
        ok = generate(tiny, [Request(id=1, prompt=[3, 4], max_new_tokens=3)], timeout=30)
        assert ok[1].finish == FinishReason.LENGTH and len(ok[1].tokens) == 3
    finally:
        setattr(tiny.runner, where, real)
        tiny.overlap = False
    assert tiny.stats().kv_blocks_free == tiny.stats().kv_blocks_total


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    """A tiny HF model plus the greedy continuation of one prompt, with EOS off."""
    path = tmp_path_factory.mktemp("hf")
    hf = save_hf(path, seed=4)
    prompt = prompts(1000, [11], seed=9)[0]
    greedy = hf_greedy(hf, prompt, 24)
    # Make EOS a token that greedy decoding first emits at step k >= 2.
    k = next(i for i, t in enumerate(greedy) if i >= 2 and t not in greedy[:i])
    config = json.loads((path / "config.json").read_text())
    config["eos_token_id"] = greedy[k]
    (path / "config.json").write_text(json.dumps(config))
    return path, hf, prompt, greedy, k


@pytest.mark.parametrize("overlap", [False, True], ids=["waited", "overlapped"])
def test_eos_stop_ignore_eos_and_min_new_tokens(hf_folder, overlap):
    """Overlapped, a sequence is already in the next step when its EOS is read: that row is dropped."""
    path, hf, prompt, greedy, k = hf_folder
    eos = greedy[k]
    stop = next(t for i, t in enumerate(greedy) if i > k + 1 and t not in greedy[:i])
    engine = start_engine(path, overlap)
    try:
        r = generate(engine, [
            Request(id=0, prompt=prompt, max_new_tokens=20),
            Request(id=1, prompt=prompt, max_new_tokens=20, ignore_eos=True),
            Request(id=2, prompt=prompt, max_new_tokens=20, ignore_eos=True, stop_ids=(stop,)),
            Request(id=3, prompt=prompt, max_new_tokens=k + 1),
            Request(id=4, prompt=prompt, max_new_tokens=k),
            Request(id=5, prompt=prompt, max_new_tokens=1),
            Request(id=6, prompt=prompt, max_new_tokens=20, min_new_tokens=k + 1),
            Request(id=7, prompt=prompt, max_new_tokens=20, ignore_eos=True, stop_ids=(stop,),
                    min_new_tokens=greedy.index(stop) + 1),
        ], timeout=60)
    finally:
        engine.stop()
    assert (r[0].tokens, r[0].finish) == (greedy[:k + 1], FinishReason.EOS)
    assert (r[1].tokens, r[1].finish) == (greedy[:20], FinishReason.LENGTH)
    assert (r[2].tokens, r[2].finish) == (greedy[:greedy.index(stop) + 1], FinishReason.STOP)
    assert (r[3].tokens, r[3].finish) == (greedy[:k + 1], FinishReason.EOS)
    assert (r[4].tokens, r[4].finish) == (greedy[:k], FinishReason.LENGTH)
    assert (r[5].tokens, r[5].finish) == (greedy[:1], FinishReason.LENGTH)
    # Until min_new_tokens, EOS/stop ids are masked out of the argmax, exactly as HF's
    # MinNewTokensLengthLogitsProcessor does: the output continues with the runner-up token.
    ids = torch.tensor([prompt])
    for req, stops in ((6, [eos]), (7, [stop])):
        mins = k + 1 if req == 6 else greedy.index(stop) + 1
        ref = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=20, min_new_tokens=mins,
                          do_sample=False, eos_token_id=stops, pad_token_id=0)[0, len(prompt):].tolist()
        assert r[req].tokens == ref
        assert len(r[req].tokens) > mins - 1 and stops[0] not in r[req].tokens[:mins]
