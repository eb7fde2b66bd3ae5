"""systems/<NAME>.json: the system description MLCommons requires, filled from the runs' records.

Detected: the agents' nodes, devices, memory and precision (as they reported them), the coordinator
host's CPU, memory and OS (for the agents on that host, i.e. all of `llmbench run`'s), and the
software versions. The rest (status, cooling, storage, networking, interconnects, and the hosts of
nodes other than the coordinator's) is the submitter's to say, in --system-file; a field the checker
needs a meaningful value for that is still empty is refused by name.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from llmbench.coordinator.submission.plan import Plan

# Every field MLCommons' checker requires (SYSTEM_DESC_REQUIRED_FIELDS), and those it needs a value in.
REQUIRED = (
    "division", "submitter", "status", "system_name", "number_of_nodes", "host_processor_model_name",
    "host_processors_per_node", "host_processor_core_count", "host_memory_capacity", "host_storage_capacity",
    "host_storage_type", "accelerators_per_node", "accelerator_model_name", "accelerator_memory_capacity",
    "framework", "operating_system", "system_type", "other_software_stack", "host_processor_frequency",
    "host_processor_caches", "host_memory_configuration", "host_processor_interconnect", "host_networking",
    "host_networking_topology", "accelerator_frequency", "accelerator_host_interconnect", "accelerator_interconnect",
    "accelerator_interconnect_topology", "accelerator_memory_configuration", "accelerator_on-chip_memories",
    "cooling", "hw_notes", "sw_notes", "host_network_card_count", "system_type_detail",
)
MEANINGFUL = (
    "division", "submitter", "system_type", "status", "system_name", "number_of_nodes", "host_processor_model_name",
    "host_processors_per_node", "host_processor_core_count", "host_memory_capacity", "host_memory_configuration",
    "host_storage_capacity", "host_storage_type", "host_networking", "host_network_card_count",
    "host_networking_topology", "accelerators_per_node", "accelerator_model_name", "accelerator_memory_capacity",
    "accelerator_host_interconnect", "accelerator_memory_configuration", "accelerator_interconnect", "cooling",
    "framework", "operating_system", "other_software_stack",
)
STATUSES = ("available", "preview", "rdi")
SYSTEM_TYPES = {"llama3.1-8b": "datacenter", "llama3.1-8b-edge": "edge"}
CPU_ONLY = "N/A (CPU inference)"


def _gb(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:.0f} GB"


def _accelerators(plan: Plan) -> dict:
    run = plan.results[0].performance
    on_gpu = [a for a in run.agents if a.device != "cpu"]
    if not on_gpu:
        return {"accelerators_per_node": "0", "accelerator_model_name": CPU_ONLY,
                "accelerator_memory_capacity": CPU_ONLY, "accelerator_memory_configuration": CPU_ONLY,
                "accelerator_host_interconnect": CPU_ONLY, "accelerator_interconnect": CPU_ONLY}
    fields = {"accelerators_per_node": max(Counter(a.node for a in on_gpu).values()),
              "accelerator_memory_capacity": _gb(max(a.memory_total_bytes for a in on_gpu))}
    names = {g["name"] for g in run.host["gpus"]}
    if all(a.node == run.host["hostname"] for a in on_gpu) and len(names) == 1:
        fields["accelerator_model_name"] = names.pop()  # else the submitter's to name
    return fields


def _host(plan: Plan) -> dict:
    run = plan.results[0].performance
    fields = {"number_of_nodes": len({a.node for a in run.agents})}
    if any(a.node != run.host["hostname"] for a in run.agents):
        return fields  # other nodes' hosts are the submitter's to describe
    cpu = run.host["cpu"]
    return {**fields, "host_processor_model_name": cpu["model"], "host_processors_per_node": cpu["sockets"],
            "host_processor_core_count": max(cpu["cores"] // cpu["sockets"], 1),
            "host_memory_capacity": _gb(run.host["memory_bytes"]), "operating_system": run.host["os"]}


def _software(plan: Plan) -> dict:
    run = plan.results[0].performance
    host, agent = run.host, run.agents[0]
    packages = host["packages"]
    framework = f"llmbench {packages['llmbench']}, PyTorch {packages['torch']}"
    cuda = f", CUDA {host['cuda']}" if host.get("cuda") else ""
    other = [f"{name} {v}" for name, v in packages.items() if v and name not in ("llmbench", "torch")]
    if host.get("driver"):
        other.append(f"NVIDIA driver {host['driver']}")
    other.append(f"Python {host['python']}")
    precision = (f"weights {agent.dtype}, GEMMs {agent.quantization}, KV cache {agent.kv_cache_dtype}; "
                 f"{agent.engine} engine")
    return {"framework": framework + cuda, "other_software_stack": ", ".join(other), "sw_notes": precision}


def describe(plan: Plan, *, division: str, submitter: str, system_name: str, given: dict) -> dict:
    """The system JSON: detected fields, then what the submitter gave over them; ValueError naming the
    required fields that are still empty."""
    fields = dict.fromkeys(REQUIRED, "")
    fields.update({"division": division, "submitter": submitter, "system_name": system_name,
                   "system_type": SYSTEM_TYPES[plan.benchmark.name], "system_type_detail": "N/A",
                   "hw_notes": ""})  # no is_network: the checker takes any value of it, "false" too, as network mode
    fields.update(_host(plan))
    fields.update(_accelerators(plan))
    fields.update(_software(plan))
    fields.update({k: v for k, v in given.items() if v is not None})
    if fields["division"] != division or fields["submitter"] != submitter:
        raise ValueError("--system-file: division and submitter come from --division and --submitter; "
                         "leave them out of the file")
    if fields["status"] not in STATUSES:
        raise ValueError(f"the system's status is {fields['status']!r}: give --status or \"status\" in "
                         f"--system-file, one of {', '.join(STATUSES)}")
    empty = [k for k in MEANINGFUL if fields[k] in ("", None)]
    if empty:
        raise ValueError(f"the system description needs {', '.join(empty)}, which llmbench cannot detect: give them "
                         f"in --system-file (a JSON object of MLCommons system fields)")
    return fields


def read_given(path: Path | None) -> dict:
    if path is None:
        return {}
    try:
        given = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"--system-file {path}: {exc}") from None
    if not isinstance(given, dict):
        raise ValueError(f"--system-file {path}: expected a JSON object of system fields")
    odd = sorted(k for k, v in given.items() if not isinstance(v, (str, int, float)))
    if odd:
        raise ValueError(f"--system-file {path}: {', '.join(odd)} must be strings or numbers")
    return given
