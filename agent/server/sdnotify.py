"""sd_notify(3) in pure Python: tell systemd how a `Type=notify` service is doing.

Every call is a no-op (returning False) when the process is not started by systemd with a
notification socket, so the agent calls these unconditionally. Messages are single datagrams of
newline-separated KEY=VALUE fields sent to $NOTIFY_SOCKET (a path, or '@name' for an abstract
socket). Sending never raises: a vanished socket must not take the agent down.
"""
from __future__ import annotations

import asyncio
import logging
import os
import socket
from typing import Callable

log = logging.getLogger(__name__)


def _address() -> str | bytes | None:
    addr = os.environ.get("NOTIFY_SOCKET", "")
    if addr.startswith("@"):
        return b"\0" + addr[1:].encode()  # Linux abstract namespace
    if addr.startswith("/"):
        return addr
    return None  # unset, or a transport we do not speak (e.g. vsock)


def notify(*fields: str) -> bool:
    """Send KEY=VALUE fields as one message; True if a notification socket took it."""
    addr = _address()
    if addr is None:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto("\n".join(fields).encode(), addr)
        return True
    except OSError as exc:
        log.debug("sd_notify to %r failed: %s", os.environ.get("NOTIFY_SOCKET"), exc)
        return False


def status(text: str) -> bool:
    """Free-form one-line status shown by `systemctl status`."""
    return notify("STATUS=" + " ".join(text.splitlines()))


def ready(text: str | None = None) -> bool:
    """Start-up finished (model loaded and warm): systemd marks the unit active."""
    return notify("READY=1", *([f"STATUS={text}"] if text else []))


def stopping(text: str | None = None) -> bool:
    """The service began shutting down."""
    return notify("STOPPING=1", *([f"STATUS={text}"] if text else []))


def watchdog() -> bool:
    """Keep-alive ping; systemd restarts the unit when pings stop for WatchdogSec."""
    return notify("WATCHDOG=1")


def watchdog_interval() -> float | None:
    """Seconds between watchdog pings (half of WatchdogSec), or None when no watchdog is set for us."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid != str(os.getpid()):
        return None  # the watchdog belongs to another process (e.g. our parent)
    return int(usec) / 2e6


async def run_watchdog(is_healthy: Callable[[], bool]) -> None:
    """Ping the watchdog every half period, but only while is_healthy() holds.

    Returns at once when systemd set no watchdog; otherwise runs until cancelled. A stuck engine
    stops the pings, so systemd restarts the service (Restart=on-failure).
    """
    interval = watchdog_interval()
    if interval is None:
        return
    while True:
        if is_healthy():
            watchdog()
        else:
            log.warning("engine unhealthy: withholding the systemd watchdog ping")
        await asyncio.sleep(interval)
