"""An engine that is an OpenAI-compatible server (vLLM, SGLang, TensorRT-LLM, llama.cpp): each query is a
streamed completion of its token ids, and the tokens streamed back are its steps.

The front (front.py) does what it does for every engine: validation, the registry, cancel and drop,
stats. This engine adds the HTTP: at most max_batch completions stream at once (the rest wait here,
reported as waiting, so the coordinator's own limit on waiting queries holds them back), one thread
each; the engine thread turns what they read into StepOutputs.

The backend going away (no connection, a reset, a 5xx) marks it down: health says NOT_SERVING at once
(EngineStats.unavailable), no new completions start and the queries it held wait here with the tokens
they already had. No tokens come, so the coordinator finds the agent stalled after its stall timeout
and re-dispatches those queries elsewhere, exactly as for a hung engine. If the backend answers again
first, they resume here: prompt plus the tokens they had, asking for the rest (greedy, so the output is
the uninterrupted one).
"""
from __future__ import annotations

import http.client
import json
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path

from llmbench.agent.engine.front import EngineFront
from llmbench.agent.engine.openai_http import Backend, BackendDown, BackendRefused, Stream
from llmbench.agent.engine.openai_load import BackendLoad, backend_load
from llmbench.agent.engine.openai_wire import NoTokenIds, completion_body, events, parse_chunk, token_ids
from llmbench.agent.engine.step_cost import StepCosts
from llmbench.agent.engine.types import (EngineConfig, EngineInfo, EngineStats, ErrorCode, FinishReason,
                                         Request, Sink, StepOutput)

log = logging.getLogger(__name__)
ENGINE_NAME = "openai"
POLL_S = 0.5  # how often /health and /metrics are read
WAIT_S = 0.5  # longest the engine thread sleeps with completions in flight
RETRY_LOG_S = 10.0  # while waiting for the backend at start: one line this often
UNKNOWN_VOCAB = 2**31 - 1  # the server did not say: it checks the ids itself
UNKNOWN_CONTEXT = 131072


def read_api_key(path: str) -> str:
    if not path:
        return ""
    try:
        key = Path(path).read_text().strip()
    except OSError as e:
        raise ValueError(f"--api-key-file {path}: {e.strerror or e}") from None
    if not key or "\n" in key:
        raise ValueError(f"--api-key-file {path}: must hold one line, the key")
    return key


@dataclass(eq=False)
class _Call:
    sink: Sink
    req: Request
    blocks: int
    generated: list[int] = field(default_factory=list)
    attempt: int = 0  # events of an earlier attempt (before a resume) are ignored
    running: bool = False  # a completion is streaming for it
    live: bool = True
    done: bool = False  # finished in the turn under way
    stream: Stream | None = None


@dataclass
class _Event:
    call: _Call
    attempt: int
    ids: list[int] = field(default_factory=list)
    finish: FinishReason | None = None
    error: tuple[ErrorCode, str] | None = None
    broken: str = ""  # the backend went away under this completion


class EndpointEngine(EngineFront[_Call]):
    thread_name = "endpoint-engine"

    def __init__(self, cfg: EngineConfig) -> None:
        if not cfg.url:
            raise ValueError("--url is required with --engine openai: the server's http://HOST:PORT/v1")
        self.backend = Backend(cfg.url, read_api_key(cfg.api_key_file))
        super().__init__(cfg.block_size)
        self.cfg = cfg
        self.num_blocks = 1
        self.info = self._engine_info(cfg.served_model or cfg.url, UNKNOWN_VOCAB, UNKNOWN_CONTEXT)
        self.step_costs = StepCosts()  # stays empty: the server's steps are its own
        self.ids_via = ""
        self._pending: deque[_Call] = deque()  # waiting here: not sent yet, or held while the backend is down
        self._pending_blocks = 0
        self._running: set[_Call] = set()
        self._events: list[_Event] = []  # from the streaming threads, under self._cond
        self._load = BackendLoad()
        self.unavailable = ""  # why the backend cannot serve now ('' while it can)
        self._progress_at = 0.0  # last time a token came (or a completion started with none streaming)
        self._slowest_gap = 0.0
        self._poll_stop = threading.Event()

    def _engine_info(self, name: str, vocab: int, context: int) -> EngineInfo:
        return EngineInfo(name=name, dtype="backend", device="endpoint", vocab_size=vocab, max_context=context,
                          eos_ids=(), parameters=0, engine=ENGINE_NAME, max_batch=self.cfg.max_batch,
                          max_step_tokens=self.cfg.max_step_tokens, kv_block_size=self.cfg.block_size)

    # ---- start: wait for the backend, learn its model, find how it returns ids -------------------
    def start(self) -> None:
        waited_since = last_line = time.monotonic()
        while why := self.backend.healthy():
            if time.monotonic() - last_line >= RETRY_LOG_S:
                log.warning("%s (waiting %.0f s so far)", why, time.monotonic() - waited_since)
                last_line = time.monotonic()
            time.sleep(POLL_S)
        self._describe_backend()
        began = time.monotonic()
        self.ids_via = self._id_form()
        self._slowest_gap = time.monotonic() - began  # the warm-up completion: a step's time, as other engines'
        log.info("backend %s: model %s, context %d, KV %d tokens, token ids via %s", self.backend.url,
                 self.info.name, self.info.max_context, self.num_blocks * self.block_size, self.ids_via)
        threading.Thread(target=self._poll, name="endpoint-poll", daemon=True).start()
        self._start_loop()

    def _describe_backend(self) -> None:
        models = self.backend.get_json(self.backend.base + "/models").get("data") or []
        ids = [m.get("id") for m in models]
        name = self.cfg.served_model or (ids[0] if ids else "")
        if not name or name not in ids:
            raise ValueError(f"backend {self.backend.url} serves {ids or 'no model'}"
                             + (f", not {name!r}: check --served-model" if name else ""))
        entry = models[ids.index(name)]
        meta = entry.get("meta") or {}  # llama.cpp
        props = self._props()
        slot_context = (props.get("default_generation_settings") or {}).get("n_ctx")
        context = slot_context or entry.get("max_model_len") or meta.get("n_ctx_train") or UNKNOWN_CONTEXT
        if self.cfg.max_context:
            context = min(context, self.cfg.max_context)
        self.info = self._engine_info(name, int(meta.get("n_vocab") or UNKNOWN_VOCAB), int(context))
        text = self.backend.metrics()
        self._load = backend_load(text) if text else BackendLoad()
        slots = props.get("total_slots")
        kv_tokens = (self._load.kv_tokens or (slot_context * slots if slot_context and slots else 0)
                     or self.cfg.num_kv_blocks * self.block_size or self.cfg.max_batch * int(context))
        self.num_blocks = max(kv_tokens // self.block_size, 1)

    def _props(self) -> dict:
        """llama.cpp's /props (per-slot context, slots); {} where the server has none."""
        try:
            props = self.backend.get_json(self.backend.root + "/props")
        except (BackendRefused, ValueError):
            return {}
        return props if isinstance(props, dict) else {}

    def _id_form(self) -> str:
        """Which request field makes this server stream token ids, from one short completion."""
        body = completion_body(self.info.name, [1], 2, 0, True, (), "token_ids") | {"logprobs": 1}
        stream = self.backend.stream(body)
        try:
            for data in events(stream.body):
                choice = (json.loads(data).get("choices") or [{}])[0]
                if isinstance(choice.get("token_ids"), list):
                    return "token_ids"
                if token_ids(choice) is not None:
                    return "logprobs"
        finally:
            stream.close()
        raise ValueError(f"backend {self.backend.url} streams completions without token ids; llmbench does not "
                         "re-tokenize text (ids could differ, so accuracy would be wrong): serve with vLLM "
                         ">= 0.10.2, SGLang or llama.cpp, which return them")

    # ---- the backend's health and load, on their own thread -------------------------------------
    def _poll(self) -> None:
        while not self._poll_stop.wait(POLL_S):
            why = self.backend.healthy()
            load = BackendLoad()
            if not why:
                try:
                    text = self.backend.metrics()
                except BackendDown as e:
                    why = f"backend {self.backend.url}: {e}"
                else:
                    load = backend_load(text) if text else BackendLoad()
            self._load = load
            if why != self.unavailable:
                if why:
                    log.error("%s: NOT_SERVING, holding %d queries", why, len(self._running) + len(self._pending))
                else:
                    log.warning("backend %s serves again", self.backend.url)
                with self._cond:
                    self.unavailable = why
                    self._cond.notify()

    # ---- the front's hooks ----------------------------------------------------------------------
    def _kv(self) -> tuple[int, int, int, int, int]:
        total = self.num_blocks
        if self.unavailable:
            free = 0  # nothing should be sent here until it serves again
        else:
            ours = sum(c.blocks for c in self._running)
            theirs = round(self._load.kv_used * total) if self._load.kv_used is not None else 0
            free = max(total - max(ours, theirs), 0)  # the server may serve other clients too
        return total, free, self._pending_blocks, len(self._running), len(self._pending)

    def _num_blocks(self) -> int:
        return self.num_blocks

    def _accept(self, req: Request, sink: Sink) -> _Call:
        call = _Call(sink, req, self.blocks_for(req))
        self._pending.append(call)
        self._pending_blocks += call.blocks
        return call

    def _release(self, call: _Call) -> None:
        call.live = False
        if call.running:
            self._running.discard(call)
            if call.stream is not None:
                call.stream.close()
        else:
            self._pending.remove(call)
            self._pending_blocks -= call.blocks

    def _has_work(self) -> bool:
        return bool(self._running or self._pending)

    def _turn(self, out: dict[Sink, StepOutput]) -> None:
        self._launch()
        with self._cond:
            self._cond.wait_for(lambda: self._events or self._inbox or self._stopping or self._launchable(),
                                timeout=WAIT_S)
            batch, self._events = self._events, []
        tokens: dict[_Call, list[int]] = {}
        finishes: list[tuple[_Call, FinishReason]] = []
        for event in batch:
            self._take(event, out, tokens, finishes)
        emitted = sum(len(t) for t in tokens.values())
        for call, got in tokens.items():
            step = self._output(out, call.sink)
            step.ids.append(call.req.id)
            step.counts.append(len(got))
            step.tokens.extend(got)
        for call, reason in finishes:
            self._finished_one(call.sink, call.req.id, self._output(out, call.sink), reason)
        if emitted:
            now = time.monotonic()
            self._slowest_gap = max(self._slowest_gap, now - self._progress_at)
            self._progress_at = now
            self._step += 1
            self._output_tokens += emitted

    def stats(self) -> EngineStats:
        """The front's counts, with the backend's availability, and a 'step under way' that is the wait for
        the server's next token (a long prefill on a slow server is slow, not hung)."""
        s = super().stats()
        streaming = s.running and not self.unavailable
        return replace(s, unavailable=self.unavailable, slowest_step_s=self._slowest_gap,
                       step_running_s=time.monotonic() - self._progress_at if streaming else 0.0)

    def stop(self) -> None:
        super().stop()
        self._poll_stop.set()
        for call in list(self._running):
            if call.stream is not None:
                call.stream.close()

    # ---- its steps ------------------------------------------------------------------------------
    def _launchable(self) -> bool:
        return bool(self._pending) and not self.unavailable and len(self._running) < self.cfg.max_batch

    def _launch(self) -> None:
        """Start completions for waiting queries, oldest first, up to max_batch streaming."""
        while self._launchable():
            call = self._pending.popleft()
            self._pending_blocks -= call.blocks
            if not self._running:
                self._progress_at = time.monotonic()
            call.running = True
            call.attempt += 1
            self._running.add(call)
            req, had = call.req, len(call.generated)
            if not had:
                self._prompt_tokens += len(req.prompt)
            body = completion_body(self.info.name, [*req.prompt, *call.generated], req.max_new_tokens - had,
                                   max(req.min_new_tokens - had, 0), req.ignore_eos, req.stop_ids, self.ids_via)
            threading.Thread(target=self._stream, args=(call, call.attempt, body), name="endpoint-stream",
                             daemon=True).start()

    def _take(self, event: _Event, out: dict[Sink, StepOutput], tokens: dict[_Call, list[int]],
              finishes: list[tuple[_Call, FinishReason]]) -> None:
        call = event.call
        if not call.live or call.done or event.attempt != call.attempt:
            return
        if event.error is not None:
            call.done = True
            self._output(out, call.sink).errors.append((call.req.id, *event.error))
            self._end(call.sink, call.req.id)
            return
        if event.broken:
            self._hold(call, event.broken)
            return
        req = call.req
        got = tokens.setdefault(call, [])
        for token in event.ids:
            call.generated.append(token)
            got.append(token)
            n = len(call.generated)
            if n >= req.max_new_tokens:
                event.finish = FinishReason.LENGTH
                break
            if not req.ignore_eos and n >= req.min_new_tokens and token in req.stop_ids:
                event.finish = FinishReason.STOP
                break
        if event.finish is not None:
            call.done = True
            finishes.append((call, event.finish))

    def _hold(self, call: _Call, why: str) -> None:
        """The backend went away under this completion: keep the query, with its tokens, for a resume."""
        self._running.discard(call)
        call.running = False
        call.stream = None
        self._pending.appendleft(call)
        self._pending_blocks += call.blocks
        if not self.unavailable:
            log.error("backend %s: %s: NOT_SERVING, holding its queries", self.backend.url, why)
            with self._cond:
                self.unavailable = why

    def _post_event(self, event: _Event) -> None:
        with self._cond:
            self._events.append(event)
            self._cond.notify()

    def _stream(self, call: _Call, attempt: int, body: dict) -> None:
        """One completion, on its own thread: every chunk's ids to the engine thread, until its finish."""
        try:
            stream = self.backend.stream(body)
        except BackendDown as e:
            self._post_event(_Event(call, attempt, broken=str(e)))
            return
        except BackendRefused as e:
            self._post_event(_Event(call, attempt, error=(ErrorCode.INVALID_QUERY, str(e))))
            return
        call.stream = stream
        if not call.live:  # released while connecting
            stream.close()
            return
        try:
            for data in events(stream.body):
                chunk = parse_chunk(data)
                if chunk.ids or chunk.finish is not None:
                    self._post_event(_Event(call, attempt, chunk.ids, chunk.finish))
                if chunk.finish is not None:
                    return
            if not stream.closed:
                self._post_event(_Event(call, attempt, broken="the completion stream ended without a finish"))
        except (NoTokenIds, RuntimeError) as e:
            self._post_event(_Event(call, attempt, error=(ErrorCode.INTERNAL, f"backend {self.backend.url}: {e}")))
        except (OSError, http.client.HTTPException, ValueError, AttributeError) as e:
            # AttributeError: http.client reading a response that a cancel closed under it
            if not stream.closed:
                self._post_event(_Event(call, attempt, broken=f"the completion stream broke: {e or type(e).__name__}"))
        finally:
            stream.close()

