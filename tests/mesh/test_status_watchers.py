"""Run watchers cannot lock the operator out: streams opened and never read (from one host) make room for
a newcomer, which ends the oldest of them; only distinct hosts filling every place refuse one."""
from __future__ import annotations

import threading
import time

import grpc
import pytest

from llmbench.coordinator.observe.metrics import RunMetrics
from llmbench.coordinator.observe.status_service import MAX_WATCHERS, StatusServer, Watchers, peer_host
from llmbench.proto import pb, rpc


def test_idle_streams_from_one_host_do_not_lock_the_tui_out():
    server = StatusServer(RunMetrics(), "127.0.0.1", 0)
    address = f"127.0.0.1:{server.start()}"
    idle_channel = grpc.insecure_channel(address)
    try:
        # MAX_WATCHERS + 4 streams that are opened and never read (each call starts the RPC at once).
        idle = [rpc.CoordinatorStub(idle_channel).WatchRun(pb.WatchRunRequest(interval_ms=100), timeout=60)
                for _ in range(MAX_WATCHERS + 4)]
        for _ in range(3):  # the operator's TUI, reconnecting a few times, gets its status each time
            with grpc.insecure_channel(address) as channel:
                status = next(iter(rpc.CoordinatorStub(channel).WatchRun(pb.WatchRunRequest(interval_ms=100),
                                                                         timeout=10)))
            assert status.elapsed_s >= 0
        assert len(server.watchers) <= MAX_WATCHERS
        # An evicted stream ends with the reason once its client reads; the others go on until cancelled.
        ended: dict[int, tuple] = {}

        def read(i: int, call) -> None:
            try:
                for _ in call:
                    pass
            except grpc.RpcError as e:
                ended[i] = e.code(), e.details()
        readers = [threading.Thread(target=read, args=(i, call), daemon=True) for i, call in enumerate(idle)]
        for reader in readers:
            reader.start()
        deadline = time.monotonic() + 20
        while len(ended) < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        evicted = dict(ended)
        assert 5 <= len(evicted) <= 7, evicted  # 4 idle ones beyond the limit, then 1-3 for the TUI's streams
        assert all(code == grpc.StatusCode.RESOURCE_EXHAUSTED and "took this one's place" in details
                   for code, details in evicted.values())
        for call in idle:
            call.cancel()
    finally:
        idle_channel.close()
        server.stop(0.5)


def test_distinct_hosts_filling_every_place_refuse_a_newcomer_from_another():
    watchers = Watchers(limit=3)
    first, *_ = [watchers.admit(f"10.0.0.{i}") for i in (1, 2, 3)]
    assert watchers.admit("10.0.0.9") is None  # every place a different host's: refused
    assert watchers.admit("10.0.0.1") is not None and first.ended.is_set()  # a host's newer stream replaces its own
    watchers = Watchers(limit=3)
    busy = [watchers.admit("10.0.0.7"), watchers.admit("10.0.0.7"), watchers.admit("10.0.0.1")]
    assert watchers.admit("10.0.0.2") is not None
    assert [w.ended.is_set() for w in busy] == [True, False, False]  # the oldest of the host holding the most


@pytest.mark.parametrize("peer, host", [("ipv4:10.0.0.5:5123", "10.0.0.5"), ("ipv6:[::1]:5123", "[::1]"),
                                        ("unix:/tmp/s", "unix:/tmp/s")])
def test_peer_host_drops_the_port(peer, host):
    assert peer_host(peer) == host
