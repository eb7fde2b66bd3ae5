"""Binding gRPC servers to a host and port, with one clear line when that fails."""
from __future__ import annotations

import socket

import grpc


def bind(server: grpc.Server | grpc.aio.Server, host: str, port: int,
         credentials: grpc.ServerCredentials | None = None, what: str = "listen") -> int:
    """Add a TLS (credentials given) or plaintext port; returns the bound port number. `what` names
    the server in the error: "cannot <what> on HOST:PORT"."""
    check_port_free(host, port, what)
    address = f"{host_for_grpc(host)}:{port}"
    try:
        bound = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    except RuntimeError:
        bound = 0
    if not bound:
        raise OSError(f"cannot {what} on {host}:{port} (address in use or not available)")
    return bound


def check_port_free(host: str, port: int, what: str = "listen") -> None:
    """Fail with one clear line before gRPC's own bind failure, which logs a C++ error to stderr. Port 0
    still checks the host (a name that does not resolve, an address not on this machine)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host.strip("[]"), port))
        except OSError as exc:
            raise OSError(f"cannot {what} on {host}:{port} ({exc.strerror})") from None


def host_for_grpc(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def split_host_port(text: str, entry: str) -> tuple[str, int]:
    """HOST:PORT or [V6]:PORT; ValueError names `entry` (the agent as the user wrote it)."""
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
    else:
        host, sep, port = text.rpartition(":")
    if not sep or not host or ":" in host and not text.startswith("["):
        raise ValueError(f"agent {entry!r}: expected HOST:PORT ([ADDR]:PORT for IPv6)")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"agent {entry!r}: port {port!r} is not a port number")
    return host, int(port)
