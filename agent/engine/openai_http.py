"""HTTP to an OpenAI-compatible server, standard library only: JSON calls, a streamed completion that
another thread may close, and the server's own /health and Prometheus text.

Failures are sorted by what the engine does about them: `BackendDown` (no connection, a reset, a
5xx: the server is gone or sick, so the query waits and resumes) and `BackendRefused` (a 4xx: this
query or our key is wrong, retrying cannot help).
"""
from __future__ import annotations

import http.client
import json
import socket
import threading
from typing import IO, Any
from urllib.parse import urlsplit

CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 600.0  # a streamed completion may wait long for its first token (a long queue, a slow prefill)
METRICS_PATHS = ("/metrics", "/prometheus/metrics")  # TensorRT-LLM's trtllm-serve has the second


class BackendDown(ConnectionError):
    """The server did not answer, or answered 5xx."""


class BackendRefused(ValueError):
    """The server answered 4xx."""


def parse_url(url: str) -> tuple[str, str, int, str]:
    """(scheme, host, port, base path) of an http(s)://HOST:PORT/v1 URL; ValueError naming the problem."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"--url {url!r}: use http://HOST:PORT/v1 (or https://)")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as e:
        raise ValueError(f"--url {url!r}: {e}") from None
    return parts.scheme, parts.hostname, port, parts.path.rstrip("/")


class Backend:
    def __init__(self, url: str, api_key: str = "") -> None:
        self.url = url
        self.scheme, self.host, self.port, self.base = parse_url(url)
        # The server's root: /health and /metrics live there, the OpenAI routes under base (/v1).
        self.root = self.base[:-3] if self.base.endswith("/v1") else ""
        self.headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"

    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        cls = http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
        return cls(self.host, self.port, timeout=timeout)

    def request(self, method: str, path: str, body: Any = None, timeout: float = CONNECT_TIMEOUT_S
                ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """The open connection and its response, status checked; the caller closes the connection."""
        conn = self._connection(timeout)
        try:
            conn.request(method, path, body=None if body is None else json.dumps(body), headers=self.headers)
            response = conn.getresponse()
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            raise BackendDown(f"{self.host}:{self.port}: {e or type(e).__name__}") from None
        if response.status >= 400:
            detail = response.read(2000).decode(errors="replace").strip()
            conn.close()
            error = BackendDown if response.status >= 500 else BackendRefused
            raise error(f"{method} {path}: HTTP {response.status}: {detail}")
        return conn, response

    def get(self, path: str) -> bytes:
        conn, response = self.request("GET", path)
        try:
            return response.read()
        except (OSError, http.client.HTTPException) as e:
            raise BackendDown(f"GET {path}: {e or type(e).__name__}") from None
        finally:
            conn.close()

    def get_json(self, path: str) -> Any:
        return json.loads(self.get(path))

    def healthy(self) -> str:
        """'' while the server answers /health (or, lacking one, its model list), else why not."""
        try:
            try:
                self.get(self.root + "/health")
            except BackendRefused:  # no /health route here
                self.get(self.base + "/models")
        except (BackendDown, BackendRefused) as e:
            return f"backend {self.url} is not serving: {e}"
        return ""

    def metrics(self) -> str | None:
        """The server's Prometheus text, or None where it has none (metrics off, no such route)."""
        for path in METRICS_PATHS:
            try:
                return self.get(self.root + path).decode(errors="replace")
            except BackendRefused:
                continue
        return None

    def stream(self, body: dict) -> "Stream":
        conn, response = self.request("POST", self.base + "/completions", body, READ_TIMEOUT_S)
        return Stream(conn, response)


class Stream:
    """One streamed completion; close() from any thread ends the reading thread's wait."""

    def __init__(self, conn: http.client.HTTPConnection, response: http.client.HTTPResponse) -> None:
        self.conn = conn
        self.body: IO[bytes] = response  # type: ignore[assignment]
        self._lock = threading.Lock()
        self.closed = False

    def close(self) -> None:
        with self._lock:
            if self.closed:
                return
            self.closed = True
            sock = self.conn.sock
        if sock is not None:  # shutdown wakes a recv blocked on another thread; the server sees the client go
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.conn.close()
