"""What the coordinator believes about one agent's free KV capacity between its status reports.

A status report is a snapshot: `kv_tokens_available` at the moment the agent had counted
`queries_received_total` queries and `queries_finished_total` finishes (errors included). Queries we
sent after that count are not in the snapshot yet (they will take KV), and finishes we received after
it are not either (they gave KV back). Both totals are agent-wide counters, so they are taken
relative to the first report we saw (nothing was sent on this link before it).

    free = kv_tokens_available - demand(sent, unseen) + demand(finished, unseen)
"""
from __future__ import annotations

from collections import deque

from llmbench.proto import pb


class Capacity:
    def __init__(self, first: pb.AgentStatus) -> None:
        self._base_received = first.queries_received_total
        self._base_finished = first.queries_finished_total
        self._sent = 0  # queries sent on this link
        self._finished = 0  # finishes and errors received on this link
        self._unseen_sent: deque[tuple[int, int]] = deque()  # (sequence number, KV demand)
        self._unseen_sent_demand = 0
        self._unseen_finished: deque[tuple[int, int]] = deque()
        self._unseen_finished_demand = 0
        self._take(first)

    def _take(self, status: pb.AgentStatus) -> None:
        # Plain ints: has_room runs for many agents per dispatched query, protobuf field reads are slow.
        self.status = status
        self.kv_tokens_total = int(status.kv_blocks_total) * int(status.kv_block_size)
        self._available = int(status.kv_tokens_available)
        self._free_slots = max(int(status.max_batch) - int(status.running), 0)
        self._waiting = int(status.waiting)
        self._default_max_waiting = max(4, int(status.max_batch) // 8)

    def on_sent(self, demand: int) -> None:
        self._sent += 1
        self._unseen_sent.append((self._sent, demand))
        self._unseen_sent_demand += demand

    def on_finished(self, demand: int) -> None:
        """demand: what the query had reserved (0 for a query the agent refused)."""
        self._finished += 1
        self._unseen_finished.append((self._finished, demand))
        self._unseen_finished_demand += demand

    def on_status(self, status: pb.AgentStatus) -> None:
        self._take(status)
        seen_sent = status.queries_received_total - self._base_received
        while self._unseen_sent and self._unseen_sent[0][0] <= seen_sent:
            self._unseen_sent_demand -= self._unseen_sent.popleft()[1]
        seen_finished = status.queries_finished_total - self._base_finished
        while self._unseen_finished and self._unseen_finished[0][0] <= seen_finished:
            self._unseen_finished_demand -= self._unseen_finished.popleft()[1]

    def free_tokens(self) -> int:
        return self._available - self._unseen_sent_demand + self._unseen_finished_demand

    def has_room(self, demand: int, overcommit: float, max_waiting: int) -> bool:
        """Room for a query of `demand` KV tokens: free tokens stay above -overcommit x the KV size (a
        bounded overcommit keeps the agent's waiting queue non-empty while there is work) and fewer
        than max_waiting (0: max(4, max_batch // 8)) queries wait there."""
        slack = int(overcommit * self.kv_tokens_total)
        return self.free_tokens() - demand >= -slack and self.waiting() < (max_waiting or self._default_max_waiting)

    def waiting(self) -> int:
        """Queries received (or on their way) that will wait for a batch slot, as far as we can tell:
        unseen ones fill the free slots of the last report first, and each unseen finish frees one."""
        unseen = len(self._unseen_sent) - self._free_slots - len(self._unseen_finished)
        return max(self._waiting + unseen, 0)
