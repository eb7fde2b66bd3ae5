"""The OpenAI completions wire format as llmbench uses it: the streamed request for one query, and the
token ids read back from each server-sent event.

Token ids come back in one of the forms servers have for it, tried in order: `choices[0].token_ids`
(vLLM's `return_token_ids`), `choices[0].logprobs.content[].id` (llama.cpp's logprobs), and
`choices[0].logprobs.tokens` as "token_id:N" (vLLM's --return-tokens-as-token-ids). A chunk with text
and none of them is refused (`NoTokenIds`): llmbench never re-tokenizes text, whose ids could differ from
the ones the model produced and would make accuracy and TEST06 meaningless.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import IO, Iterator

from llmbench.agent.engine.types import FinishReason

# How ids are asked for: the request field that makes a server return them.
ID_FIELDS: dict[str, dict[str, object]] = {"token_ids": {"return_token_ids": True}, "logprobs": {"logprobs": 1}}
FINISH_REASONS = {"length": FinishReason.LENGTH, "stop": FinishReason.EOS}
_TOKEN_ID_PREFIX = "token_id:"


class NoTokenIds(ValueError):
    """The server streamed text without the ids of its tokens."""


@dataclass
class Chunk:
    ids: list[int]
    finish: FinishReason | None


def completion_body(model: str, prompt: list[int], max_tokens: int, min_tokens: int, ignore_eos: bool,
                    stop_ids: tuple[int, ...], ids_via: str) -> dict:
    """One query as a streamed, greedy completion of token ids; min_tokens and stop_token_ids are read by
    vLLM and SGLang and ignored by llama.cpp (the engine enforces both itself as well)."""
    body: dict = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0.0,
                  "stream": True, "ignore_eos": ignore_eos, **ID_FIELDS[ids_via]}
    if min_tokens:
        body["min_tokens"] = min_tokens
    if stop_ids and not ignore_eos:
        body["stop_token_ids"] = list(stop_ids)
    return body


def events(stream: IO[bytes]) -> Iterator[str]:
    """The data payloads of a server-sent event stream, up to `[DONE]` or its end."""
    for raw in stream:
        line = raw.strip()
        if not line.startswith(b"data:"):
            continue  # blank separators, comments, event names
        data = line[5:].strip().decode()
        if data == "[DONE]":
            return
        yield data


def parse_chunk(data: str) -> Chunk:
    """The ids and finish of one streamed completion chunk."""
    message = json.loads(data)
    if "error" in message:
        raise RuntimeError(f"the server reported an error mid-stream: {message['error']}")
    choices = message.get("choices") or []
    if not choices:
        return Chunk([], None)  # a usage-only chunk
    choice = choices[0]
    reason = choice.get("finish_reason")
    finish = FINISH_REASONS.get(reason, FinishReason.STOP) if reason else None
    ids = token_ids(choice)
    if ids is None:
        if choice.get("text"):
            raise NoTokenIds("the server streamed text without token ids")
        ids = []
    return Chunk(ids, finish)


def token_ids(choice: dict) -> list[int] | None:
    """The chunk's token ids in any form a server sends them, or None if it sent none."""
    if isinstance(choice.get("token_ids"), list):
        return [int(t) for t in choice["token_ids"]]
    logprobs = choice.get("logprobs") or {}
    content = logprobs.get("content")
    if isinstance(content, list) and all(isinstance(c, dict) and "id" in c for c in content):
        return [int(c["id"]) for c in content]
    tokens = logprobs.get("tokens")
    if isinstance(tokens, list) and all(isinstance(t, str) and t.startswith(_TOKEN_ID_PREFIX) for t in tokens):
        return [int(t[len(_TOKEN_ID_PREFIX):]) for t in tokens]
    return None
