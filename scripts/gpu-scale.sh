#!/usr/bin/env bash
# One call on a multi-GPU machine (device tool kind nvidia-h200-x4 or nvidia-h100-x4, carry .whl): scaling from one agent to one
# agent per GPU, a table last. Usage: scripts/gpu-scale.sh [phase ...]
# phases (default all, in this order; about 8 minutes):
#   single-offline single-server  one agent on the first GPU (GPU 0): LoadGen Offline, then Server
#   multi-offline multi-server    `llmbench run --gpus all`, N agents: Offline, then Server at
#                                 N x SERVER_QPS x SERVER_SCALE
# Env: OFFLINE_QPS (34.9: one H200, --max-batch 1024), SERVER_QPS (30: VALID on one H200 with
# --max-step-tokens 2048), SERVER_SCALE (0.9), DURATION (60 s per LoadGen run), SAMPLES (3000),
# PRECISION (agent flags, e.g. "--quantization fp8 --kv-cache-dtype fp8 --max-batch 1024": then OFFLINE_QPS=48.5
# SERVER_QPS=44 SERVER_STEP_TOKENS=4096), SERVER_STEP_TOKENS (2048),
# PHASE_TIMEOUT (220 s). Each phase is one `llmbench run`; its LoadGen logs stay in /tmp/runs/<phase>
# (the table also reads phases of an earlier call on the same machine), the summaries go to $OUT.
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-$PWD/out}; mkdir -p "$OUT" /tmp/runs
phases=${*:-single-offline single-server multi-offline multi-server}
OFFLINE_QPS=${OFFLINE_QPS:-34.9} SERVER_QPS=${SERVER_QPS:-30} SERVER_SCALE=${SERVER_SCALE:-0.9}
offline_args="--max-batch 1024 ${PRECISION:-}"
server_args="--max-step-tokens ${SERVER_STEP_TOKENS:-2048} ${PRECISION:-}"
# Carried wheels (LoadGen etc.) and the project itself, without touching the machine's packages.
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
mkdir -p /tmp/site/llmbench
for d in cli common proto agent coordinator tui; do ln -sfn "$PWD/$d" "/tmp/site/llmbench/$d"; done
export PYTHONPATH=/tmp/site
nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader | tee "$OUT/gpus.txt"
N=$(nvidia-smi -L | grep -c '^GPU ')
mul() { python3 -c "import sys; print(f'{float(sys.argv[1]) * float(sys.argv[2]):g}')" "$@"; }
mesh() {  # phase name, then llmbench run flags; LoadGen for DURATION seconds
  local name=$1; shift
  rm -rf "/tmp/runs/$name"
  timeout -s INT "${PHASE_TIMEOUT:-220}" python3 -m llmbench.cli run --model llama3.1-8b --no-tui --progress 10 \
    --duration "${DURATION:-60}" --max-samples "${SAMPLES:-3000}" --output "/tmp/runs/$name" "$@" 2>&1 \
    | tee "/tmp/runs/$name.out" | grep -E "^\[|^llmbench|^agents listening|^Result|per second|TTFT|TPOT|^  [0-9]"
  cp "/tmp/runs/$name/mlperf_log_summary.txt" "$OUT/$name.txt" 2>/dev/null
}
summary=()
for phase in $phases; do
  start=$SECONDS
  case $phase in
    single-offline) mesh "$phase" --gpus 1 --scenario Offline --target-qps "$OFFLINE_QPS" --agent-args "$offline_args" ;;
    single-server) mesh "$phase" --gpus 1 --scenario Server --target-qps "$SERVER_QPS" --agent-args "$server_args" ;;
    multi-offline) mesh "$phase" --gpus all --scenario Offline --target-qps "$(mul "$N" "$OFFLINE_QPS")" \
                     --agent-args "$offline_args" ;;
    multi-server) mesh "$phase" --gpus all --scenario Server --target-qps "$(mul "$N" "$(mul "$SERVER_QPS" "$SERVER_SCALE")")" \
                    --agent-args "$server_args" ;;
    *) echo "unknown phase $phase"; exit 2 ;;
  esac
  summary+=("$phase: $((SECONDS - start)) s")
done
echo; echo "== phases =="; printf '%s\n' "${summary[@]}"
python3 - "$N" "$SERVER_QPS" "$SERVER_SCALE" <<'EOF'
import re, sys
from pathlib import Path
from llmbench.coordinator.loadgen.summary import read_summary

n, server_qps, scale = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
rows = {}
print(f"\n== scaling: 1 agent vs {n} agents (llmbench run --gpus all) ==")
print(f"{'phase':<15}{'agents':>7}{'target':>9}  {'result':<8}{'samples/s':>10}{'tokens/s':>10}{'TTFT p99':>10}{'TPOT p99':>10}")
for name in ("single-offline", "multi-offline", "single-server", "multi-server"):
    out = Path("/tmp/runs") / name
    if not (out / "mlperf_log_summary.txt").is_file():
        print(f"{name:<15} not run (or no summary: see /tmp/runs/{name}.out)")
        continue
    s = rows[name] = read_summary(out)
    log = (Path("/tmp/runs") / f"{name}.out").read_text(errors="replace")
    agents = re.search(r"llmbench run: (\d+) local agents", log)
    ms = lambda v, unit: f"{v:.0f} {unit}" if v is not None else "-"
    print(f"{name:<15}{agents.group(1) if agents else '?':>7}{s.target_qps or 0:>9g}  {s.result:<8}"
          f"{s.samples_per_s or 0:>10.2f}{s.tokens_per_s or 0:>10.0f}{ms(s.ttft_p99_ms, 'ms'):>10}"
          f"{ms(s.tpot_p99_ms, 'ms'):>10}")
one, many = rows.get("single-offline"), rows.get("multi-offline")
if one and many and one.samples_per_s:
    factor = many.samples_per_s / one.samples_per_s
    print(f"Offline: {many.samples_per_s:.2f} / {one.samples_per_s:.2f} samples/s = {factor:.2f}x on {n} GPUs "
          f"(goal >= {0.95 * n:.2f}x: {'met' if factor >= 0.95 * n else 'NOT met'}; {many.result})")
one, many = rows.get("single-server"), rows.get("multi-server")
if one and many:
    goal = scale * n * server_qps
    ok = many.result == "VALID" and (many.target_qps or 0) >= goal - 1e-6
    print(f"Server: 1 agent {one.result} at {one.target_qps:g} QPS; {n} agents {many.result} at {many.target_qps:g} QPS "
          f"= {many.target_qps / server_qps:.2f}x (goal VALID at >= {goal:g} QPS: {'met' if ok else 'NOT met'})")
for name in ("multi-offline", "multi-server"):
    log = Path("/tmp/runs") / f"{name}.out"
    if log.is_file():
        lines = log.read_text(errors="replace").splitlines()
        start = next((i for i, line in enumerate(lines) if line.startswith("Agent utilisation")), None)
        if start is not None:
            print(f"-- {name}: {lines[start]}")
            print("\n".join(line for line in lines[start + 1:start + 1 + n]))
EOF
