"""systemd units: `systemd-analyze verify` accepts them, and their command lines parse with our CLI."""
import re
import shlex
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from llmbench.cli.main import parse_args

ROOT = Path(__file__).resolve().parents[2]
UNITS = ROOT / "systemd"
INSTALLED_BINARY = "/opt/llmbench/bin/llmbench"


def systemd_analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        print("systemd-analyze not found on PATH (Debian package: systemd)")
        pytest.skip("systemd-analyze not found on PATH (Debian package: systemd)")
    return path


def unit_lines(name: str) -> list[tuple[str, str]]:
    """(key, value) pairs in file order; systemd allows a key to repeat (DeviceAllow=)."""
    out = []
    for line in (UNITS / name).read_text().splitlines():
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            out.append((key.strip(), value.strip()))
    return out


def settings(name: str) -> dict[str, str]:
    return dict(unit_lines(name))


def env_file(name: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in (UNITS / name).read_text().splitlines()
             if line.strip() and not line.startswith("#"))
    return {k: v for k, v in pairs}


def render_for_verify(tmp_path: Path, name: str, text: str | None = None) -> Path:
    """A copy whose ExecStart binary exists here (verify checks that it is executable)."""
    stub = tmp_path / "llmbench"
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    text = (UNITS / name).read_text() if text is None else text
    out = tmp_path / name
    out.write_text(text.replace(INSTALLED_BINARY, str(stub)))
    return out


def verify(*units: Path) -> subprocess.CompletedProcess:
    return subprocess.run([systemd_analyze(), "verify", "--man=no", "--recursive-errors=no", *map(str, units)],
                          capture_output=True, text=True, timeout=60)


def test_units_verify_cleanly(tmp_path):
    units = [render_for_verify(tmp_path, n) for n in ("llmbench-agent.service", "llmbench-coordinator.service")]
    result = verify(*units)
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), result.stdout + result.stderr


def test_a_copy_for_a_second_gpu_verifies(tmp_path):
    unit = render_for_verify(tmp_path, "llmbench-agent.service")
    copy = unit.rename(tmp_path / "llmbench-agent-1.service")
    result = verify(copy)
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), result.stdout + result.stderr


@pytest.mark.parametrize("breakage", [("Type=notify", "Type=notifyy"), ("WatchdogSec=", "WatchdogSek="),
                                      ("DeviceAllow=/dev/nvidiactl", "DeviceAllow=nvidiactl")])
def test_verify_catches_a_broken_unit(tmp_path, breakage):
    text = (UNITS / "llmbench-agent.service").read_text()
    assert breakage[0] in text
    result = verify(render_for_verify(tmp_path, "llmbench-agent.service", text.replace(*breakage, 1)))
    assert result.returncode != 0


def test_agent_unit_is_notify_watchdog_hardened_with_gpu_allow_list():
    s = settings("llmbench-agent.service")
    assert s["Type"] == "notify" and s["NotifyAccess"] == "main"
    assert s["Restart"] == "on-failure" and s["WatchdogSec"]
    env_files = [v for k, v in unit_lines("llmbench-agent.service") if k == "EnvironmentFile"]
    assert env_files == ["/etc/llmbench/agent.env", "-/etc/llmbench/%N.env"]  # shared, then per-unit overrides
    assert s["TimeoutStartSec"] in ("30min", "infinity")
    for key in ("DynamicUser", "ProtectHome", "NoNewPrivileges"):
        assert s[key] == "yes", key
    assert s["ProtectSystem"] == "strict" and s["DevicePolicy"] == "closed"
    assert s.get("PrivateDevices", "no") == "no"  # it would hide /dev/nvidia*
    allowed = {v for k, v in unit_lines("llmbench-agent.service") if k == "DeviceAllow"}
    assert {"char-nvidia* rw", "/dev/nvidiactl rw", "/dev/nvidia-uvm rw", "/dev/nvidia-uvm-tools rw"} <= allowed


def systemd_argv(unit: str, env: dict[str, str]) -> list[str]:
    """Expand a unit's ExecStart the way systemd does: ${X} is one word, $X splits on spaces,
    %H is the host name, %N the unit name, %S /var/lib."""
    line = settings(unit)["ExecStart"]
    for spec, value in (("%H", socket.gethostname()), ("%N", unit.removesuffix(".service")), ("%S", "/var/lib")):
        line = line.replace(spec, value)
    words = []
    for word in shlex.split(line):
        if re.fullmatch(r"\$[A-Z_]+", word):
            words += env[word[1:]].split()
        else:
            words.append(re.sub(r"\$\{([A-Z_]+)\}", lambda m: env[m.group(1)], word))
    return words


@pytest.mark.parametrize("unit, env, command", [
    ("llmbench-agent.service", "agent.env", "agent"),
    ("llmbench-coordinator.service", "coordinator.env", "coordinator"),
])
def test_exec_start_parses_with_the_cli(unit, env, command):
    argv = systemd_argv(unit, env_file(env))
    assert argv[:2] == [INSTALLED_BINARY, command]
    args = parse_args(argv[1:])  # argparse exits 2 on an unknown or malformed flag
    if command == "agent":
        assert (args.host, args.port, args.model) == ("0.0.0.0", 50051, env_file(env)["LLMBENCH_MODEL"])
        assert args.node_name == socket.gethostname()
