"""The Textual TUI in front of a run (in this process or a coordinator's WatchRun), and `llmbench tui`."""

__all__ = ["app", "cli", "fit", "front", "live", "source", "state", "widgets"]
