"""The written parts of a submission: the code README (exact commands, llmbench version, settings),
each scenario's README, and measurements.json (how the model's weights and inputs were taken)."""
from __future__ import annotations

import json

from llmbench.coordinator.submission.plan import Plan, Result
from llmbench.coordinator.submission.run_folder import RunFolder

INPUT_TYPES = "int32 (token ids)"


def _run_lines(run: RunFolder) -> list[str]:
    lines = [f"- {run.kind} (`{run.path.name}`):", "", "  ```sh", f"  {run.command}", "  ```"]
    changes = run.settings_changes
    if changes:
        lines += ["", "  Settings that differ from mlperf.conf:", *(f"  - {c}" for c in changes)]
    return lines


def _agents(run: RunFolder) -> list[str]:
    return [f"- {a.address} on {a.node}: {a.model} ({a.engine} engine) on {a.device}, weights {a.dtype}, GEMMs "
            f"{a.quantization}, KV cache {a.kv_cache_dtype}" for a in run.agents]


def code_readme(plan: Plan, demo_note: str) -> str:
    first = plan.results[0].performance
    lines = [f"# llmbench {first.llmbench}: {plan.benchmark.name}", "",
             "llmbench serves the model from a mesh of gRPC agents (one per GPU, continuous batching, paged KV "
             "cache) driven by one coordinator that runs MLPerf LoadGen.", "",
             f"Installed with `pip install llmbench=={first.llmbench}` (or from its source tree: `pip install -e .`).",
             ""]
    if demo_note:
        lines += [demo_note, ""]
    lines += ["## The agents", "", *_agents(first), "", "## The exact commands", ""]
    for result in plan.results:
        lines += [f"### {result.scenario}", ""]
        for run in (result.performance, result.accuracy, result.test06):
            if run is not None:
                lines += [*_run_lines(run), ""]
    return "\n".join(lines)


def scenario_readme(plan: Plan, result: Result, demo_note: str) -> str:
    perf = result.performance
    detail = perf.detail
    lines = [f"# {plan.benchmark.name} {result.scenario}", "",
             f"LoadGen {detail.get('loadgen_version')}: {detail.get('result_validity')}, "
             f"{detail.get('result_tokens_per_second') or detail.get('result_completed_tokens_per_second')} tokens/s.",
             "", "Reproduce with the commands below (see also the code README).", ""]
    if demo_note:
        lines += [demo_note, ""]
    for run in (result.performance, result.accuracy, result.test06):
        if run is not None:
            lines += [*_run_lines(run), ""]
    return "\n".join(lines)


def measurements(result: Result) -> str:
    agent = result.performance.agents[0]
    fp8 = agent.quantization not in ("", "none")
    weights = f"{agent.quantization} (layer GEMMs), {agent.dtype} (LM head, embeddings, norms)" if fp8 else agent.dtype
    transformations = ("e4m3 quantization of the layer weights with per-channel scales, activations per token"
                       if fp8 else "none")
    body = {"input_data_types": INPUT_TYPES, "retraining": "No", "starting_weights_filename": agent.model,
            "weight_data_types": weights, "weight_transformations": transformations}
    return json.dumps(body, indent=2) + "\n"
