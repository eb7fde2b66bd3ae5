"""TorchX component: `agents` llmbench agents plus one coordinator, as one AppDef.

Needs the `torchx` extra (pip install 'llmbench[torchx]'). Run from the folder results should go to:

    torchx run -s local_cwd llmbench.coordinator.deploy.torchx_component:mesh --agents 2 --model tiny

Each agent is its own role (agent0, agent1, ...) on port PORT+i, so the local schedulers can run
them side by side on one host (add `-cfg auto_set_cuda_visible_devices=True` to give each its own
GPU). The coordinator waits for them, runs LoadGen, and ends the app (see mesh_launch.py).

On Kubernetes, TorchX's `kubernetes` scheduler runs every role as a pod of one Volcano job:

    torchx run -s kubernetes -cfg queue=default,namespace=llmbench \\
        llmbench.coordinator.deploy.torchx_component:mesh --cluster True --agents 4 \\
        --image REGISTRY/llmbench:0.1.0 --model /models/Llama-3.1-8B-Instruct --results_pvc llmbench-shared

There the coordinator finds agent i through the variable Volcano's svc plugin sets in every pod
(VC_AGENT<i>_0_HOSTS), and a ReadWriteMany PVC carries the results and the "done" file.
"""
import shlex

import torchx.specs as specs

AGENT_HOST_VAR = "VC_AGENT{i}_0_HOSTS"  # Volcano svc plugin: host name of task "agent{i}-0"
RESULTS_MOUNT = "/results"


def mesh(
    agents: int = 2,
    model: str = "tiny",
    engine: str = "paged",
    scenario: str = "Offline",
    mode: str = "performance",
    max_samples: int = 0,
    port: int = 50051,
    gpus_per_agent: int = 1,
    image: str = "llmbench:0.1.0",
    output: str = "results/torchx",
    cluster: bool = False,
    results_pvc: str = "",
    agent_args: str = "",
    coordinator_args: str = "",
) -> specs.AppDef:
    """llmbench agents plus one coordinator running MLPerf LoadGen against them.

    Args:
        agents: number of agents (one role each, agent0 ... agentN-1)
        model: HF model folder (as the agents see it) or a preset (tiny, llama3.1-8b)
        engine: paged (the real engine) or simulated (no model, fake tokens)
        scenario: LoadGen scenario, Offline or Server
        mode: performance or accuracy
        max_samples: use the first N dataset samples (0: all)
        port: port of agent0; agent i listens on port + i
        gpus_per_agent: GPUs each agent asks for (0 on a CPU-only host)
        image: container image built from the repository's Dockerfile (ignored by local_cwd)
        output: folder for results with the local schedulers (a run writes OUTPUT/APP_ID)
        cluster: True for the kubernetes scheduler (agents bind 0.0.0.0, found through Volcano)
        results_pvc: ReadWriteMany PVC mounted at /results in every pod (needed with cluster)
        agent_args: more `llmbench agent` flags, e.g. "--dtype bfloat16 --max-batch 256"
        coordinator_args: more `llmbench coordinator` flags, e.g. "--user-conf /results/user.conf"
    """
    if agents < 1:
        raise ValueError(f"agents must be at least 1, got {agents}")
    if not (0 < port and port + agents - 1 < 65536):
        raise ValueError(f"ports {port}..{port + agents - 1} are not all valid port numbers")
    if cluster and not results_pvc:
        raise ValueError("cluster=True needs results_pvc: a ReadWriteMany PVC every pod mounts at /results")
    root = RESULTS_MOUNT if cluster else output
    run_dir = f"{root}/{specs.macros.app_id}"
    done = f"{run_dir}.done"
    mounts = [specs.VolumeMount(src=results_pvc, dst_path=RESULTS_MOUNT)] if results_pvc else []
    launch = ["-m", "llmbench.coordinator.deploy.mesh_launch"]

    roles = []
    addresses = []
    for i in range(agents):
        host = f"${{{AGENT_HOST_VAR.format(i=i)}}}" if cluster else "127.0.0.1"
        addresses.append(f"{host}:{port + i}")
        flags = ["--model", model, "--engine", engine, "--host", "0.0.0.0" if cluster else "127.0.0.1",
                 "--port", str(port + i), "--agent-id", f"{specs.macros.app_id}-agent{i}",
                 *shlex.split(agent_args)]
        roles.append(specs.Role(
            name=f"agent{i}", image=image, entrypoint="python", args=[*launch, "agent", "--done", done, "--", *flags],
            resource=specs.Resource(cpu=4, gpu=gpus_per_agent, memMB=32 * 1024),
            port_map={"grpc": port + i}, mounts=mounts))

    flags = ["--agents", ",".join(addresses), "--scenario", scenario, "--mode", mode, "--output", run_dir,
             # agents start with the coordinator: give them time to bind and to load the model
             "--connect-timeout", "300", *(["--max-samples", str(max_samples)] if max_samples else []),
             *shlex.split(coordinator_args)]
    roles.append(specs.Role(
        name="coordinator", image=image, entrypoint="python",
        args=[*launch, "coordinator", "--done", done, "--", *flags],
        resource=specs.Resource(cpu=2, gpu=0, memMB=8 * 1024), mounts=mounts))
    return specs.AppDef(name="llmbench", roles=roles)
