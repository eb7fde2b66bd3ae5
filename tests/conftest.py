import argparse
import os

import pytest
import torch

# Without a GPU the Triton kernels run in Triton's interpreter; the switch must be set before anything
# (transformers, the engine) first imports triton.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(scope="module")
def sim_agents(tmp_path_factory):
    """Two simulated agents (20k tokens/s each) on loopback, shared by a test module."""
    from llmbench.coordinator.commands import run_local
    args = argparse.Namespace(agents=2, engine="simulated", model="tiny", tokens_per_s=20000, agent_args="")
    agents = run_local.start_agents(args, tmp_path_factory.mktemp("agents"))
    yield agents
    run_local.stop_agents(agents)


@pytest.fixture
def splitter():
    """MLPerf's sentence splitter (nltk Punkt); skips where neither punkt source is installed."""
    from llmbench.coordinator.scoring import sentences
    try:
        return sentences.get_splitter()
    except LookupError as exc:
        pytest.skip(str(exc))


@pytest.fixture
def agents():
    """Starts `llmbench agent` processes (cli_processes.AgentProcess) and kills them after the test."""
    from cli_processes import AgentProcess
    started: list[AgentProcess] = []

    def start(*args: str, port: int = 0) -> AgentProcess:
        a = AgentProcess(*args, port=port)
        started.append(a)
        return a
    yield start
    for a in started:
        a.kill()
