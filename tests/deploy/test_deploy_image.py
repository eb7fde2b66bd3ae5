"""The Dockerfile (no Docker engine here): its structure, that it ships every package the project
installs, that .dockerignore lets those in and keeps the rest out, and that it fits k8s/."""
import json
import re
from pathlib import Path

import pytest
import yaml

from llmbench.cli.main import parse_args

tomllib = pytest.importorskip("tomllib", reason="Python 3.11+ reads pyproject.toml")

ROOT = Path(__file__).resolve().parents[2]


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def ignored(path: str) -> bool:
    """.dockerignore semantics: the last pattern matching the path or one of its parents wins."""
    verdict = False
    parts = path.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        raw = raw.strip()
        if not raw or raw.startswith("#"):
            continue
        negate, pattern = raw.startswith("!"), raw.lstrip("!").rstrip("/")
        regex = (re.escape(pattern).replace(r"\*\*/", "(.*/)?").replace(r"\*\*", ".*")
                 .replace(r"\*", "[^/]*").replace(r"\?", "[^/]"))
        if any(re.fullmatch(regex, p) for p in prefixes):
            verdict = not negate
    return verdict


def test_dockerfile_structure():
    ins = instructions()
    assert ins[0][0] == "ARG" and ins[1] == ("FROM", "${CUDA_IMAGE}")
    assert re.search(r"CUDA_IMAGE=nvidia/cuda:\S+-ubuntu", ins[0][1])
    user = [a for i, a in ins if i == "USER"]
    assert user and user[-1].split(":")[0] not in ("0", "root")
    assert json.loads(dict(ins)["ENTRYPOINT"]) == ["llmbench"]
    assert [i for i, _ in ins].index("USER") > max(n for n, (i, _) in enumerate(ins) if i == "RUN")


def test_default_command_parses_as_an_agent():
    cmd = json.loads(dict(instructions())["CMD"])
    args = parse_args(cmd)
    assert cmd[0] == "agent" and args.host == "0.0.0.0"
    assert str(args.port) == dict(instructions())["EXPOSE"]


def test_build_context_holds_every_installed_package():
    copies = [arg.split() for ins, arg in instructions() if ins == "COPY"]
    assert copies == [[".", "/src/"]]
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    needed = [*pyproject["tool"]["setuptools"]["package-dir"].values(), "pyproject.toml", pyproject["project"]["readme"]]
    for path in needed:
        assert (ROOT / path).exists(), f"pyproject names {path}, which does not exist"
        assert not ignored(path) and not ignored(f"{path}/__init__.py"), f".dockerignore drops {path}"


def test_dockerignore_keeps_out_the_heavy_and_private():
    for path in (".venv/bin/python", ".git/HEAD", "results/run/mlperf_log_summary.txt", "tests/test_x.py",
                 "agent/__pycache__/server.cpython-311.pyc", "__pycache__/x.pyc", ".whl/x.whl", "models/llama/model.safetensors",
                 "llmbench.egg-info/PKG-INFO", "k8s/base/kustomization.yaml"):
        assert ignored(path), path


def test_k8s_runs_this_image_as_its_user():
    uid = next(a for i, a in instructions() if i == "USER").split(":")[0]
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    for manifest in ("agent/daemonset.yaml", "coordinator-job.yaml"):
        obj = yaml.safe_load((ROOT / "k8s" / "base" / manifest).read_text())
        pod = obj["spec"]["template"]["spec"]
        assert str(pod["securityContext"]["runAsUser"]) == uid
        for c in pod.get("initContainers", []) + pod["containers"]:
            assert c["image"] == f"llmbench:{version}"
