"""Agent discovery: turn `--agents` into addresses and keep them current during a run.

`--agents` is a comma-separated list of entries:
- `HOST:PORT` (or `[V6]:PORT`): a fixed agent, passed through as written;
- `dns:///NAME:PORT`: every A/AAAA record of NAME, each an agent on PORT. Pointed at a headless
  Kubernetes Service (`dns:///llmbench-agent.llmbench.svc:50051`) this is every *ready* agent pod,
  because the Service leaves not-ready pods out of DNS.

`AgentWatcher` re-resolves the DNS entries every few seconds and reports addresses that joined
or vanished, so agents that come up mid-run get work and ones that go away are drained.
"""
from __future__ import annotations

import argparse
import asyncio
import inspect
import ipaddress
import logging
import socket
import sys
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from llmbench.common.ports import split_host_port

log = logging.getLogger(__name__)

# (host, port) -> getaddrinfo-shaped tuples; injectable so tests need no DNS server.
Resolver = Callable[[str, int], list[tuple[Any, ...]]]
Callback = Callable[[str], Awaitable[None] | None]


class ResolveError(Exception):
    """DNS could not answer now (server failure, timeout): keep the addresses we had."""


@dataclass(frozen=True)
class AgentEntry:
    host: str
    port: int
    dns: bool  # resolve to every A/AAAA record (dns:///), or use as written


def format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_agents(spec: str) -> list[AgentEntry]:
    """Parse `--agents`; raises ValueError naming the bad entry."""
    entries = []
    for raw in spec.split(","):
        entry = raw.strip()
        if not entry:
            continue
        if entry.startswith("dns:"):
            if not entry.startswith("dns:///"):
                raise ValueError(f"agent {entry!r}: use dns:///NAME:PORT (a DNS server authority is not supported)")
            host, port = split_host_port(entry[len("dns:///"):], entry)
            entries.append(AgentEntry(host, port, dns=True))
        elif "://" in entry:
            raise ValueError(f"agent {entry!r}: unknown scheme; use HOST:PORT or dns:///NAME:PORT")
        else:
            entries.append(AgentEntry(*split_host_port(entry, entry), dns=False))
    if not entries:
        raise ValueError("--agents is empty: give HOST:PORT[,...] or dns:///NAME:PORT")
    return entries


def system_resolver(host: str, port: int) -> list[tuple[Any, ...]]:
    return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)


def resolve_entry(entry: AgentEntry, resolver: Resolver = system_resolver) -> set[str]:
    """Addresses of one entry. A name that does not exist (no ready agents) is the empty set;
    a temporary DNS failure raises ResolveError."""
    if not entry.dns:
        return {format_address(entry.host, entry.port)}
    try:
        infos = resolver(entry.host, entry.port)
    except socket.gaierror as exc:
        if exc.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)):
            return set()
        raise ResolveError(f"resolving {entry.host}: {exc}") from exc
    addrs = set()
    for family, *_, sockaddr in infos:
        if family in (socket.AF_INET, socket.AF_INET6):
            addrs.add(format_address(str(ipaddress.ip_address(sockaddr[0].split("%")[0])), entry.port))
    return addrs


def resolve_agents(spec: str, resolver: Resolver = system_resolver) -> set[str]:
    """Every address `--agents` names right now (blocking; see AgentWatcher for the async form)."""
    return set().union(*(resolve_entry(e, resolver) for e in parse_agents(spec)))


class AgentWatcher:
    """Resolves `--agents` now and every `interval_s`, calling on_added/on_removed with addresses.

    Callbacks may be plain functions or coroutines; they run on the watcher's event loop. A DNS
    entry that fails temporarily keeps its previous addresses until it answers again.
    """

    def __init__(self, spec: str, on_added: Callback, on_removed: Callback, interval_s: float = 5.0,
                 resolver: Resolver = system_resolver) -> None:
        if interval_s <= 0:
            raise ValueError("discovery interval must be > 0 seconds")
        self.entries = parse_agents(spec)
        self.on_added, self.on_removed = on_added, on_removed
        self.interval_s = interval_s
        self.resolver = resolver
        self.addresses: set[str] = set()
        self._last: dict[AgentEntry, set[str]] = {}
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def dynamic(self) -> bool:
        return any(e.dns for e in self.entries)

    async def refresh(self) -> None:
        """Resolve every entry once and report the differences."""
        for entry in self.entries:
            try:
                self._last[entry] = await asyncio.to_thread(resolve_entry, entry, self.resolver)
            except ResolveError as exc:
                log.warning("%s; keeping %d known address(es)", exc, len(self._last.get(entry, ())))
        now = set().union(*self._last.values())
        added, removed = sorted(now - self.addresses), sorted(self.addresses - now)
        self.addresses = now
        for addr in removed:
            log.info("agent %s left", addr)
            await _call(self.on_removed, addr)
        for addr in added:
            # A fixed HOST:PORT is only listed, not found: saying it joined would suggest it answered.
            log.log(logging.INFO if self.dynamic else logging.DEBUG, "agent %s joined", addr)
            await _call(self.on_added, addr)
        if added or removed:
            self._changed.set()

    async def start(self) -> set[str]:
        """First resolution (reported through on_added), then re-resolve in the background."""
        await self.refresh()
        if self.dynamic:
            self._task = asyncio.create_task(self._loop(), name="agent-discovery")
        return set(self.addresses)

    async def wait_for(self, count: int, timeout_s: float) -> set[str]:
        """Wait until at least `count` addresses are known; TimeoutError names what was found."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while len(self.addresses) < count:
            self._changed.clear()
            left = deadline - loop.time()
            try:
                if left <= 0:
                    raise asyncio.TimeoutError
                await asyncio.wait_for(self._changed.wait(), left)
            except asyncio.TimeoutError:
                found = ", ".join(sorted(self.addresses)) or "none"
                raise TimeoutError(f"found {len(self.addresses)} agent(s) of {count} wanted after {timeout_s:g} s "
                                   f"({found}){self._empty_names()}") from None
        return set(self.addresses)

    def _empty_names(self) -> str:
        empty = [f"dns:///{format_address(e.host, e.port)}" for e in self.entries if e.dns and not self._last.get(e)]
        if not empty:
            return ""
        return (f"; {', '.join(empty)} resolves to no address (the name does not exist, or no agent behind "
                f"it is ready)")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.refresh()
            except Exception:  # a failing callback must not end discovery for the run
                log.exception("agent discovery refresh failed")


async def _call(callback: Callback, addr: str) -> None:
    result = callback(addr)
    if inspect.isawaitable(result):
        await result


async def _wait(spec: str, count: int, timeout_s: float, interval_s: float) -> set[str]:
    watcher = AgentWatcher(spec, lambda a: None, lambda a: None, interval_s=interval_s)
    try:
        await watcher.start()
        return await watcher.wait_for(count, timeout_s)
    finally:
        await watcher.stop()


def main(argv: list[str] | None = None) -> int:
    """`python -m llmbench.coordinator.mesh.discovery [--wait N] SPEC`: print the agents SPEC names now,
    or once at least N are there (the coordinator Job's init container uses this)."""
    p = argparse.ArgumentParser(prog="python -m llmbench.coordinator.mesh.discovery", description=main.__doc__)
    p.add_argument("agents", help="HOST:PORT[,...] and/or dns:///NAME:PORT entries")
    p.add_argument("--wait", type=int, default=0, metavar="N", help="wait until at least N agents are found")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds to wait (default 600)")
    p.add_argument("--interval", type=float, default=2.0, help="seconds between DNS lookups (default 2)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.wait:
            found = asyncio.run(_wait(args.agents, args.wait, args.timeout, args.interval))
        else:
            found = resolve_agents(args.agents)
            if not found:
                raise ResolveError(f"{args.agents} resolves to no address now (the name does not exist, or no "
                                   f"agent behind it is ready)")
    except ValueError as exc:
        print(f"discovery: error: {exc}", file=sys.stderr)
        return 2
    except (TimeoutError, ResolveError) as exc:
        print(f"discovery: error: {exc}", file=sys.stderr)
        return 1
    print("\n".join(sorted(found)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
