"""TLS credentials and the bearer token for every gRPC server and channel of the mesh.

Servers (agents, and any coordinator-side server) take a `ServerSecurity`: a certificate and key turn
TLS on, a client CA makes it mutual TLS, a token puts `BearerTokenInterceptor` in front of every
method except grpc.health.v1 (kubelet probes carry no credentials). Clients take a `ClientSecurity`:
a CA (or a client certificate) turns TLS on, and the token goes out as `authorization: Bearer <token>`
metadata on every call.

The token comes from a file (`--auth-token-file`) or the LLMBENCH_AUTH_TOKEN environment variable.
Without TLS it crosses the network in clear text: use both off loopback (docs/security.md).

A server, e.g. the coordinator's status server (thread pool) or the agent (grpc.aio):

    add_server_arguments(parser)                    # --tls-cert --tls-key --tls-client-ca --auth-token-file
    security = server_security(args, host)
    server = grpc.server(pool, interceptors=security.interceptors(aio=False))  # grpc.aio: interceptors()
    creds = security.credentials()
    port = server.add_secure_port(addr, creds) if creds else server.add_insecure_port(addr)

A client: `ClientSecurity(...).aio_channel(address)` / `.channel(address)`, and `metadata=security.metadata`
on each call.
"""
from __future__ import annotations

import argparse
import hashlib
import hmac
import ipaddress
import logging
import os
from dataclasses import dataclass
from typing import Any, Sequence

import grpc

TOKEN_ENV = "LLMBENCH_AUTH_TOKEN"
AUTH_HEADER = "authorization"
OPEN_METHOD_PREFIXES = ("/grpc.health.v1.Health/",)  # reachable without the token

log = logging.getLogger("llmbench.auth")

# Markers in a failed connection's details that mean TLS is set up differently on the two sides, and
# what to fix: waiting does not help. gRPC reports them all as UNAVAILABLE, like a server not up yet.
HANDSHAKE_FAILURES = {
    "CERTIFICATE_VERIFY_FAILED": "its certificate does not chain to --tls-ca",
    "Hostname Verification Check failed": "its certificate does not hold the name dialled (give --tls-server-name "
                                          "with a name it holds)",
    "WRONG_VERSION_NUMBER": "it does not speak TLS (leave out --tls-ca, or start it with --tls-cert and --tls-key)",
}


def read_file(path: str, flag: str) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise ValueError(f"{flag} {path}: {exc.strerror}") from None
    if not data.strip():
        raise ValueError(f"{flag} {path}: the file is empty")
    return data


def read_token(path: str | None) -> str | None:
    """The token from `path` (--auth-token-file), else from $LLMBENCH_AUTH_TOKEN; None when neither is set."""
    if path:
        token = read_file(path, "--auth-token-file").decode("utf-8", "replace").strip()
        source = f"--auth-token-file {path}"
    else:
        token = os.environ.get(TOKEN_ENV, "").strip()
        source = f"${TOKEN_ENV}"
        if not token:
            return None
    if not token.isascii() or not token.isprintable() or " " in token:
        raise ValueError(f"{source}: the token must be printable ASCII without spaces")
    return token


def is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ServerSecurity:
    cert: str | None = None  # PEM certificate chain: TLS on
    key: str | None = None  # its PEM private key
    client_ca: str | None = None  # PEM CA that client certificates must chain to: mutual TLS
    token: str | None = None  # bearer token every call but health must carry

    def __post_init__(self) -> None:
        if bool(self.cert) != bool(self.key):
            raise ValueError("--tls-cert and --tls-key go together")
        if self.client_ca and not self.cert:
            raise ValueError("--tls-client-ca (mutual TLS) needs --tls-cert and --tls-key")

    @property
    def tls(self) -> bool:
        return bool(self.cert)

    def credentials(self) -> grpc.ServerCredentials | None:
        if not self.tls:
            return None
        pair = (read_file(self.key, "--tls-key"), read_file(self.cert, "--tls-cert"))
        ca = read_file(self.client_ca, "--tls-client-ca") if self.client_ca else None
        return grpc.ssl_server_credentials([pair], root_certificates=ca, require_client_auth=ca is not None)

    def interceptors(self, aio: bool = True) -> list:
        """For grpc.aio.server(interceptors=...), or grpc.server(...) with aio=False."""
        if not self.token:
            return []
        return [BearerTokenInterceptor(self.token) if aio else SyncBearerTokenInterceptor(self.token)]

    def describe(self) -> str:
        tls = "mutual TLS" if self.client_ca else "TLS" if self.tls else "plaintext"
        return f"{tls}, {'bearer token required' if self.token else 'no token'}"


@dataclass(frozen=True)
class ClientSecurity:
    ca: str | None = None  # PEM CA the server's certificate must chain to (TLS on)
    cert: str | None = None  # client certificate for mutual TLS (TLS on)
    key: str | None = None
    server_name: str | None = None  # name to verify in the server's certificate instead of the address
    token: str | None = None

    def __post_init__(self) -> None:
        if bool(self.cert) != bool(self.key):
            raise ValueError("--tls-cert and --tls-key go together")
        if self.server_name and not self.tls:
            raise ValueError("--tls-server-name needs --tls-ca (or a client certificate)")

    @property
    def tls(self) -> bool:
        return bool(self.ca or self.cert)

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return ((AUTH_HEADER, f"Bearer {self.token}"),) if self.token else ()

    def channel_credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=read_file(self.ca, "--tls-ca") if self.ca else None,
            private_key=read_file(self.key, "--tls-key") if self.key else None,
            certificate_chain=read_file(self.cert, "--tls-cert") if self.cert else None)

    def channel_options(self, options: Sequence[tuple[str, Any]] = ()) -> list[tuple[str, Any]]:
        extra = [("grpc.ssl_target_name_override", self.server_name)] if self.server_name else []
        return [*options, *extra]

    def handshake_failure(self, details: str) -> str | None:
        """What to fix when a connection failed on TLS, from the failure's details; None when they show
        nothing certain. A plaintext server and a TLS one that wants a client certificate both just close
        the connection, which a server going down does too: that gets a hint, not a verdict."""
        for marker, why in HANDSHAKE_FAILURES.items():
            if marker in details:
                return f"TLS handshake failed: {why}"
        return None

    def closed_hint(self, details: str) -> str:
        """A hint to append to a connection closed at once ("Socket closed"), or ""."""
        if "Socket closed" not in details or self.cert:
            return ""
        fix = ("if it asks for a client certificate (mutual TLS), give --tls-cert and --tls-key" if self.tls
               else "if it serves TLS, give --tls-ca")
        return f"; closed at once: {fix}"

    def warn_if_exposed(self, address: str) -> None:
        """A token sent without TLS to another host can be read by anyone on the path (the agent warns
        too, for its side); said once per address."""
        host = address.split("///")[-1].rsplit(":", 1)[0]
        if self.token and not self.tls and not is_loopback(host) and address not in _WARNED:
            _WARNED.add(address)
            log.warning("sending the bearer token in plaintext to %s: anyone on the path can read it; "
                        "give --tls-ca (see docs/security.md)", address)

    def aio_channel(self, address: str, options: Sequence[tuple[str, Any]] = ()) -> grpc.aio.Channel:
        self.warn_if_exposed(address)
        if self.tls:
            return grpc.aio.secure_channel(address, self.channel_credentials(), self.channel_options(options))
        return grpc.aio.insecure_channel(address, options=list(options))

    def channel(self, address: str, options: Sequence[tuple[str, Any]] = ()) -> grpc.Channel:
        """A blocking channel (scripts, tests)."""
        self.warn_if_exposed(address)
        if self.tls:
            return grpc.secure_channel(address, self.channel_credentials(), self.channel_options(options))
        return grpc.insecure_channel(address, options=list(options))


_WARNED: set[str] = set()


def _digest(value: str | bytes) -> bytes:
    return hashlib.sha256(value.encode() if isinstance(value, str) else value).digest()


UNAUTHENTICATED_MESSAGE = "missing or wrong bearer token (send metadata 'authorization: Bearer <token>')"


class _TokenCheck:
    """Whether a call may pass: its method is open, or it carries the token. Compared in constant time
    (over SHA-256 digests, so not even the length leaks)."""

    def __init__(self, token: str, open_prefixes: tuple[str, ...]) -> None:
        self._expected = _digest(f"Bearer {token}")
        self._open = open_prefixes

    def allows(self, details: grpc.HandlerCallDetails) -> bool:
        if (details.method or "").startswith(self._open):
            return True
        ok = False
        for key, value in details.invocation_metadata or ():
            if key == AUTH_HEADER:
                ok |= hmac.compare_digest(_digest(value), self._expected)
        return ok


def _denials(deny) -> dict[bool, grpc.RpcMethodHandler]:
    """A refusing handler by response_streaming. Each takes its request as a stream it never reads (on the
    wire a unary request is a stream of one), so a refused call's body is never received into memory: 32
    bodies of 60 MiB without a token grew the agent 1 MiB, where reading them first cost 1.6 GB."""
    return {False: grpc.stream_unary_rpc_method_handler(deny), True: grpc.stream_stream_rpc_method_handler(deny)}


def _denial(denials: dict, handler: grpc.RpcMethodHandler | None) -> grpc.RpcMethodHandler:
    if handler is None:  # unknown method: refused the same way, revealing nothing
        return denials[True]
    return denials[handler.response_streaming]


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):
    """For grpc.aio servers: every call without `authorization: Bearer <token>` gets UNAUTHENTICATED,
    except methods under `open_prefixes` (health)."""

    def __init__(self, token: str, open_prefixes: tuple[str, ...] = OPEN_METHOD_PREFIXES) -> None:
        self._check = _TokenCheck(token, open_prefixes)

        async def deny(request: Any, context: grpc.aio.ServicerContext) -> None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, UNAUTHENTICATED_MESSAGE)
        self._denials = _denials(deny)

    async def intercept_service(self, continuation, handler_call_details: grpc.HandlerCallDetails):
        handler = await continuation(handler_call_details)
        return handler if self._check.allows(handler_call_details) else _denial(self._denials, handler)


class SyncBearerTokenInterceptor(grpc.ServerInterceptor):
    """The same for thread-pool servers (grpc.server)."""

    def __init__(self, token: str, open_prefixes: tuple[str, ...] = OPEN_METHOD_PREFIXES) -> None:
        self._check = _TokenCheck(token, open_prefixes)

        def deny(request: Any, context: grpc.ServicerContext) -> None:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, UNAUTHENTICATED_MESSAGE)
        self._denials = _denials(deny)

    def intercept_service(self, continuation, handler_call_details: grpc.HandlerCallDetails):
        handler = continuation(handler_call_details)
        return handler if self._check.allows(handler_call_details) else _denial(self._denials, handler)


def add_server_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tls-cert", help="PEM certificate chain: serve TLS (with --tls-key)")
    p.add_argument("--tls-key", help="PEM private key of --tls-cert")
    p.add_argument("--tls-client-ca", help="PEM CA that client certificates must chain to: mutual TLS")
    p.add_argument("--auth-token-file", help=f"file with the bearer token every call must carry (default "
                                             f"${TOKEN_ENV}; neither: no token); health stays open")


def server_security(args: argparse.Namespace, host: str) -> ServerSecurity:
    security = ServerSecurity(args.tls_cert, args.tls_key, args.tls_client_ca, read_token(args.auth_token_file))
    security.credentials()  # unreadable files fail now, with the flag's name
    if not is_loopback(host) and not (security.tls and security.token):
        log.warning("listening on %s with %s: anyone who reaches the port %s", host, security.describe(),
                    "can use it" if not security.token else "can read the token off the wire")
    return security


def add_client_arguments(p: argparse.ArgumentParser, peers: str = "the agents'") -> None:
    """peers: whose certificates and token these are, for the help text."""
    p.add_argument("--tls-ca", help=f"PEM CA {peers} certificates must chain to: connect with TLS")
    p.add_argument("--tls-cert", help="PEM client certificate for mutual TLS (with --tls-key)")
    p.add_argument("--tls-key", help="PEM private key of --tls-cert")
    p.add_argument("--tls-server-name", help=f"name to verify in {peers} certificates instead of their address")
    p.add_argument("--auth-token-file", help=f"file with {peers} bearer token (default ${TOKEN_ENV})")


def client_security(args: argparse.Namespace) -> ClientSecurity:
    """From add_client_arguments' flags; flags a command lacks count as unset ($LLMBENCH_AUTH_TOKEN still applies)."""
    flags = [getattr(args, name, None) for name in ("tls_ca", "tls_cert", "tls_key", "tls_server_name")]
    security = ClientSecurity(*flags, token=read_token(getattr(args, "auth_token_file", None)))
    if security.tls:
        security.channel_credentials()  # unreadable files fail now, with the flag's name
    return security
