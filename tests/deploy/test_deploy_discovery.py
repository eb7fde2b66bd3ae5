"""`--agents` parsing, DNS resolution of headless-Service names, and the re-resolving watcher."""
import asyncio
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from llmbench.coordinator.mesh.discovery import (AgentEntry, AgentWatcher, parse_agents, resolve_agents,
                                            resolve_entry)
from llmbench.coordinator.mesh.discovery import main as discovery_main


class FakeDNS:
    """A resolver with getaddrinfo's shape whose records the test changes mid-run."""

    def __init__(self, records: dict[str, list[str]]) -> None:
        self.records = records
        self.fail_with: int | None = None
        self.calls = 0

    def __call__(self, host: str, port: int) -> list[tuple]:
        self.calls += 1
        if self.fail_with is not None:
            raise socket.gaierror(self.fail_with, "fake failure")
        if host not in self.records:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        out = []
        for ip in self.records[host]:
            if ":" in ip:
                out.append((socket.AF_INET6, socket.SOCK_STREAM, 6, "", (ip, port, 0, 0)))
            else:
                out.append((socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port)))
        return out


SVC = "llmbench-agent.llmbench.svc"


async def until(check, timeout_s: float = 10.0) -> None:
    """Wait for the watcher's background refreshes (a thread hop each) instead of sleeping a guess."""
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


def test_parse_agents_mixed_list():
    assert parse_agents(f"10.0.0.1:50051, dns:///{SVC}:50051,[::1]:7000,agent-b:1") == [
        AgentEntry("10.0.0.1", 50051, False), AgentEntry(SVC, 50051, True),
        AgentEntry("::1", 7000, False), AgentEntry("agent-b", 1, False)]


@pytest.mark.parametrize("spec, words", [
    ("", "empty"), ("host", "HOST:PORT"), ("host:http", "not a port"), ("host:70000", "not a port"),
    ("dns:///svc", "HOST:PORT"), ("dns://10.0.0.10/svc:1", "authority"), ("http://x:1", "scheme"),
    ("::1:50051", "IPv6"),
])
def test_parse_agents_rejects_bad_entries(spec, words):
    with pytest.raises(ValueError, match=words):
        parse_agents(spec)


def test_dns_entry_resolves_to_every_record():
    dns = FakeDNS({SVC: ["10.1.0.5", "10.1.0.7", "fd00::9", "10.1.0.5"]})
    assert resolve_agents(f"dns:///{SVC}:50051,static:1", dns) == {
        "10.1.0.5:50051", "10.1.0.7:50051", "[fd00::9]:50051", "static:1"}


def test_plain_entries_pass_through_unresolved():
    dns = FakeDNS({})
    assert resolve_agents("somewhere:50051,[::1]:2", dns) == {"somewhere:50051", "[::1]:2"}
    assert dns.calls == 0


def test_missing_name_is_no_agents_but_server_failure_raises():
    dns = FakeDNS({})
    assert resolve_entry(AgentEntry(SVC, 1, True), dns) == set()
    dns.fail_with = socket.EAI_AGAIN
    with pytest.raises(Exception, match="resolving"):
        resolve_entry(AgentEntry(SVC, 1, True), dns)


def test_real_resolver_localhost():
    addrs = resolve_agents("dns:///localhost:50051")
    assert addrs and addrs <= {"127.0.0.1:50051", "[::1]:50051"}


def test_watcher_reports_joins_and_leaves():
    dns = FakeDNS({SVC: ["10.1.0.5"]})
    events: list[tuple[str, str]] = []

    async def on_removed(addr: str) -> None:  # coroutine callbacks are awaited
        events.append(("removed", addr))

    async def scenario() -> None:
        # One resolver thread: a lookup queued behind the others has run once they all have.
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(1))
        watcher = AgentWatcher(f"dns:///{SVC}:50051,static:9", lambda a: events.append(("added", a)),
                               on_removed, interval_s=0.02, resolver=dns)
        assert await watcher.start() == {"10.1.0.5:50051", "static:9"}
        dns.records[SVC] = ["10.1.0.5", "10.1.0.6"]       # a pod turned ready
        assert await watcher.wait_for(3, timeout_s=10) >= {"10.1.0.6:50051"}
        dns.records[SVC] = ["10.1.0.6"]                   # a pod went away
        await until(lambda: watcher.addresses == {"10.1.0.6:50051", "static:9"})
        dns.fail_with = socket.EAI_AGAIN                  # DNS hiccup: keep what we have
        failed_from = dns.calls
        await until(lambda: dns.calls >= failed_from + 3)
        assert watcher.addresses == {"10.1.0.6:50051", "static:9"}
        dns.fail_with = None
        del dns.records[SVC]                              # no ready pods at all
        await until(lambda: watcher.addresses == {"static:9"})
        await watcher.stop()
        await asyncio.to_thread(lambda: None)  # a lookup already handed to the thread has finished
        calls = dns.calls
        await asyncio.sleep(0.1)
        assert dns.calls == calls  # stopped means stopped

    asyncio.run(scenario())
    assert events == [("added", "10.1.0.5:50051"), ("added", "static:9"), ("added", "10.1.0.6:50051"),
                      ("removed", "10.1.0.5:50051"), ("removed", "10.1.0.6:50051")]


def test_wait_for_times_out_naming_what_it_found():
    dns = FakeDNS({SVC: ["10.1.0.5"]})

    async def scenario() -> None:
        watcher = AgentWatcher(f"dns:///{SVC}:1", lambda a: None, lambda a: None, interval_s=0.02, resolver=dns)
        await watcher.start()
        try:
            with pytest.raises(TimeoutError, match=r"found 1 agent\(s\) of 2 .*10\.1\.0\.5:1"):
                await watcher.wait_for(2, timeout_s=0.1)
        finally:
            await watcher.stop()

    asyncio.run(scenario())


def test_static_list_starts_no_background_task():
    async def scenario() -> None:
        watcher = AgentWatcher("a:1,b:2", lambda a: None, lambda a: None)
        assert await watcher.start() == {"a:1", "b:2"}
        assert watcher._task is None

    asyncio.run(scenario())


def test_failing_callback_does_not_stop_discovery():
    dns = FakeDNS({SVC: ["10.1.0.5"]})
    seen = []

    def on_added(addr: str) -> None:
        seen.append(addr)
        if addr.startswith("10.1.0.6"):
            raise RuntimeError("pool refused it")

    async def scenario() -> None:
        watcher = AgentWatcher(f"dns:///{SVC}:1", on_added, lambda a: None, interval_s=0.02, resolver=dns)
        await watcher.start()
        dns.records[SVC] = ["10.1.0.5", "10.1.0.6"]
        await until(lambda: "10.1.0.6:1" in seen)
        dns.records[SVC] = ["10.1.0.5", "10.1.0.6", "10.1.0.7"]
        await until(lambda: "10.1.0.7:1" in seen)
        await watcher.stop()

    asyncio.run(scenario())
    assert seen == ["10.1.0.5:1", "10.1.0.6:1", "10.1.0.7:1"]


def test_the_dns_check_command_says_when_a_name_resolves_to_nothing(monkeypatch, capsys):
    def no_such_name(host, port, *args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    monkeypatch.setattr(socket, "getaddrinfo", no_such_name)
    assert discovery_main(["dns:///nosuch.invalid:50051"]) == 1
    err = capsys.readouterr().err
    assert "dns:///nosuch.invalid:50051 resolves to no address now" in err
    assert discovery_main(["--wait", "1", "--timeout", "0.3", "--interval", "0.1", "dns:///nosuch.invalid:50051"]) == 1
    err = capsys.readouterr().err
    assert "found 0 agent(s) of 1 wanted after 0.3 s (none); dns:///nosuch.invalid:50051 resolves to no address" in err
    assert discovery_main(["127.0.0.1:50051"]) == 0
    assert capsys.readouterr().out == "127.0.0.1:50051\n"
    assert discovery_main(["nohost"]) == 2
