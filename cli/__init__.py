"""`llmbench` command line: one dispatcher, each subcommand lives beside the code it drives."""
from llmbench.cli.main import agent_main, coordinator_main, main

__all__ = ["main", "agent_main", "coordinator_main"]
