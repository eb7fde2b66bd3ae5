"""The TorchX mesh: the AppDef's roles and flags, the role launcher, and a real local_cwd run."""
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llmbench.cli.main import parse_args
from llmbench.coordinator.deploy import mesh_launch

ROOT = Path(__file__).resolve().parents[2]
COMPONENT = ROOT / "coordinator" / "deploy" / "torchx_component.py"


def component():
    try:
        from llmbench.coordinator.deploy import torchx_component
    except ImportError:
        print("torchx is not installed (pip install 'torchx>=0.7'): TorchX tests skipped")
        pytest.skip("torchx is not installed")
    return torchx_component


def after_dashes(args: list[str]) -> list[str]:
    return args[args.index("--") + 1:]


def test_local_appdef_roles_and_flags():
    app = component().mesh(agents=3, model="tiny", scenario="Server", max_samples=50, port=40000,
                           agent_args="--max-batch 8", coordinator_args="--duration 5")
    assert [r.name for r in app.roles] == ["agent0", "agent1", "agent2", "coordinator"]
    ports = []
    for role in app.roles[:3]:
        assert role.args[:4] == ["-m", "llmbench.coordinator.deploy.mesh_launch", "agent", "--done"]
        args = parse_args(["agent", *after_dashes(role.args)])
        assert (args.host, args.model, args.max_batch) == ("127.0.0.1", "tiny", 8)
        assert role.resource.gpu == 1 and role.port_map == {"grpc": args.port}
        ports.append(args.port)
    assert ports == [40000, 40001, 40002]
    coord = app.roles[3]
    args = parse_args(["coordinator", *after_dashes(coord.args)])
    assert args.agents == "127.0.0.1:40000,127.0.0.1:40001,127.0.0.1:40002"
    assert (args.scenario, args.max_samples, args.duration) == ("Server", 50, 5.0)
    done = coord.args[coord.args.index("--done") + 1]
    assert all(r.args[r.args.index("--done") + 1] == done for r in app.roles)
    assert str(args.output) + ".done" == done and "${app_id}" in done  # one file per app


def test_cluster_appdef_finds_agents_through_volcano_and_shares_a_volume():
    tx = component()
    app = tx.mesh(agents=2, cluster=True, results_pvc="llmbench-shared", image="registry.example.com/llmbench:1")
    coord = app.roles[-1]
    args = parse_args(["coordinator", *after_dashes(coord.args)])
    assert args.agents == "${VC_AGENT0_0_HOSTS}:50051,${VC_AGENT1_0_HOSTS}:50052"
    assert str(args.output).startswith("/results/")
    for role in app.roles:
        assert role.image == "registry.example.com/llmbench:1"
        assert [(m.src, m.dst_path, m.read_only) for m in role.mounts] == [("llmbench-shared", "/results", False)]
    assert parse_args(["agent", *after_dashes(app.roles[0].args)]).host == "0.0.0.0"
    with pytest.raises(ValueError, match="results_pvc"):
        tx.mesh(cluster=True)
    with pytest.raises(ValueError, match="at least 1"):
        tx.mesh(agents=0)
    with pytest.raises(ValueError, match="port"):
        tx.mesh(agents=2, port=65535)


def test_expand_env(monkeypatch):
    monkeypatch.setenv("VC_AGENT0_0_HOSTS", "job-agent0-0.job")
    assert mesh_launch.expand_env(["${VC_AGENT0_0_HOSTS}:1,x", "$HOME"]) == ["job-agent0-0.job:1,x", "$HOME"]
    monkeypatch.delenv("VC_AGENT0_0_HOSTS")
    with pytest.raises(ValueError, match="VC_AGENT0_0_HOSTS is not set"):
        mesh_launch.expand_env(["${VC_AGENT0_0_HOSTS}:1"])


def test_run_until_stops_the_child_when_done_appears(tmp_path):
    done = tmp_path / "run.done"
    child = [sys.executable, "-c", "import time; time.sleep(60)"]
    start = time.monotonic()
    launcher = subprocess.Popen([sys.executable, "-c", "import sys; from pathlib import Path; "
                                 "from llmbench.coordinator.deploy.mesh_launch import run_until; "
                                 f"sys.exit(run_until({child!r}, Path({str(done)!r}), poll_s=0.05))"])
    time.sleep(0.5)
    assert launcher.poll() is None  # still serving
    done.touch()
    assert launcher.wait(10) == 0 and time.monotonic() - start < 10


def test_run_until_passes_on_the_child_status(tmp_path):
    before = signal.getsignal(signal.SIGTERM)
    assert mesh_launch.run_until([sys.executable, "-c", "raise SystemExit(3)"], tmp_path / "never") == 3
    assert signal.getsignal(signal.SIGTERM) is before  # our SIGTERM forwarding is undone


def test_run_then_mark_marks_even_a_failed_run(tmp_path):
    done = tmp_path / "out" / "run.done"
    assert mesh_launch.run_then_mark([sys.executable, "-c", "raise SystemExit(4)"], done) == 4
    assert done.exists()


def free_port_pair() -> int:
    for _ in range(50):
        base = random.randint(20000, 60000)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", base))
                b.bind(("127.0.0.1", base + 1))
            return base
        except OSError:
            continue
    raise RuntimeError("no two free adjacent ports")


@pytest.mark.slow
def test_local_cwd_run_end_to_end(tmp_path):
    component()
    torchx = Path(sys.executable).parent / "torchx"
    port = free_port_pair()
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    cmd = [str(torchx), "run", "-s", "local_cwd", f"{COMPONENT}:mesh", "--agents", "2", "--engine", "simulated",
           "--gpus_per_agent", "0", "--max_samples", "20", "--port", str(port),
           "--coordinator_args", "--duration 1 --target-qps 20"]
    result = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    log = result.stdout + result.stderr
    assert result.returncode == 0 and "Job finished: SUCCEEDED" in log, log[-3000:]
    (run_dir,) = [p for p in (tmp_path / "results" / "torchx").iterdir() if p.is_dir()]
    assert "Result is : VALID" in (run_dir / "mlperf_log_summary.txt").read_text()
    assert run_dir.with_name(run_dir.name + ".done").exists()
    for p in (port, port + 1):  # the agents are gone, their ports free again
        with socket.socket() as s:
            s.bind(("127.0.0.1", p))
