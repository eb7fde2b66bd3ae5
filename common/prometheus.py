"""A tiny Prometheus exporter from the standard library: text exposition format 0.0.4 over HTTP.

Agent and coordinator each describe their metrics as `Family`s in a `collect()` function; the server
calls it on every scrape of /metrics, on its own daemon thread, so nothing is computed between scrapes.

    server = MetricsServer(collect, "0.0.0.0", 9400)
    port = server.start()          # GET http://HOST:PORT/metrics
    server.stop()
"""
from __future__ import annotations

import math
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
KINDS = ("counter", "gauge", "summary", "histogram")


@dataclass
class Family:
    """One metric: name (with its unit, and _total for counters), kind, help, and its samples."""
    name: str
    kind: str
    help: str
    samples: list[tuple[str, dict[str, str], float]] = field(default_factory=list)  # (suffix, labels, value)

    def add(self, value: float, suffix: str = "", **labels: str) -> "Family":
        self.samples.append((suffix, labels, value))
        return self


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(int(value)) if float(value).is_integer() and abs(value) < 2**53 else repr(float(value))


def render(families: list[Family]) -> str:
    lines = []
    for f in families:
        if f.kind not in KINDS:
            raise ValueError(f"metric {f.name}: unknown kind {f.kind!r}")
        help_text = f.help.replace("\\", "\\\\").replace("\n", "\\n")
        lines.append(f"# HELP {f.name} {help_text}")
        lines.append(f"# TYPE {f.name} {f.kind}")
        for suffix, labels, value in f.samples:
            tags = ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items())
            lines.append(f"{f.name}{suffix}{{{tags}}} {_number(value)}" if tags else f"{f.name}{suffix} {_number(value)}")
    return "\n".join(lines) + "\n"


class MetricsServer:
    def __init__(self, collect: Callable[[], list[Family]], host: str = "127.0.0.1", port: int = 0) -> None:
        self.collect = collect
        self.host = host
        self.port = port
        self._httpd: ThreadingHTTPServer | None = None

    def start(self) -> int:
        collect = self.collect

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] not in ("/metrics", "/"):
                    self.send_error(404, "metrics are at /metrics")
                    return
                body = render(collect()).encode()
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass  # a scrape every few seconds is not news

        server_class = ThreadingHTTPServer
        if ":" in self.host:
            server_class = type("ThreadingHTTPServer6", (ThreadingHTTPServer,), {"address_family": socket.AF_INET6})
        try:
            self._httpd = server_class((self.host.strip("[]"), self.port), Handler)
        except OSError as exc:
            raise OSError(f"cannot serve metrics on {self.host}:{self.port} ({exc.strerror})") from None
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        threading.Thread(target=self._httpd.serve_forever, name="metrics-http", daemon=True).start()
        return self.port

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
