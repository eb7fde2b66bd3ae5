"""The agents as the coordinator sees them: discovery, links, per-agent capacity, routing and the
pool that dispatches each query once and re-dispatches on loss.
"""

__all__ = ["agent_link", "agent_slot", "capacity", "discovery", "dispatch", "job", "routing"]
