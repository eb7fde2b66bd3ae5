#!/usr/bin/env bash
# One call on a GPU machine (device tool, H100 or H200; carry .whl): GPU tests, kernel and engine benchmarks, and
# short LoadGen runs through the mesh; a short table last. Usage: scripts/gpu-bench.sh [phase ...]
# phases: tests kernels fused bench eager profile hf offline server interactive (default: all), sweep (attention
# tiles; PROFILE_KIND=decode profiles decode-only steps), and
# bench-fp8 (the layer GEMMs and KV cache in fp8), bench-fp8-overlap (the same with --overlap: run both
# in one call for the A/B). PRECISION (e.g. "--quantization fp8 --kv-cache-dtype
# fp8") goes to every agent of the mesh phases.
# Each mesh phase starts its agent with `llmbench run`, keeps LoadGen's logs in /tmp/runs and copies the
# summary to $OUT (only 8 files come back from the device machine). Figures land in $OUT (or ./out).
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-$PWD/out}; mkdir -p "$OUT"
phases=${*:-tests kernels fused bench eager profile hf offline server interactive}
# Carried wheels (LoadGen etc.) and the project itself, without touching the machine's packages.
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
mkdir -p /tmp/site/llmbench
for d in cli common proto agent coordinator tui; do ln -sfn "$PWD/$d" "/tmp/site/llmbench/$d"; done
export PYTHONPATH=/tmp/site
lb() { python3 -m llmbench.cli "$@"; }
mesh() {  # name, then llmbench run flags: one local agent on the GPU, LoadGen for DURATION seconds
  local name=$1; shift
  lb run --model llama3.1-8b --agents 1 --duration "${DURATION:-60}" --output "/tmp/runs/$name" "$@" \
    --agent-args "${AGENT_ARGS:-} ${PRECISION:-}" 2>&1 \
    | grep -vE "^\[ *[0-9.]+ s\]" | tail -12
  cp "/tmp/runs/$name/mlperf_log_summary.txt" "$OUT/$name.txt" 2>/dev/null
  grep -hE "^\| (step kind|decode|mixed|all) " "/tmp/runs/$name"/agent-*.log  # the agent's step table, logged at its stop
}
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c 'import torch, triton; print("torch", torch.__version__, "triton", triton.__version__)'
summary=()
for phase in $phases; do
  start=$SECONDS
  case $phase in
    tests) python3 -m pytest -q -p no:cacheprovider -s ${TESTS:-tests/agent/test_engine_model.py tests/agent/test_triton_attention.py \
             tests/agent/test_engine_triton.py tests/agent/test_triton_fused.py tests/agent/test_engine_fp8.py tests/agent/test_engine_parity_shapes.py tests/agent/test_engine_graphs.py tests/agent/test_step_cost.py} 2>&1 | tee "$OUT/tests.txt" \
             | grep -E "passed|failed|FAILED|rel L2|Error" ;;
    kernels) { python3 -m llmbench.agent.commands.bench_attention; python3 -m llmbench.agent.commands.bench_kernels fp8; } 2>&1 \
               | tee "$OUT/kernels.txt" | tail -32 ;;
    fused) python3 -m llmbench.agent.commands.bench_kernels fused 2>&1 | tee "$OUT/fused.txt" | tail -12 ;;
    bench) lb bench --model llama3.1-8b --samples "${SAMPLES:-1500}" ${BENCH_ARGS:-} 2>&1 | tee "$OUT/bench.txt" | tail -34 ;;
    bench-fp8) lb bench --model llama3.1-8b --samples "${SAMPLES:-1500}" --quantization fp8 --kv-cache-dtype fp8 \
                 ${BENCH_ARGS:-} 2>&1 | tee "$OUT/bench-fp8.txt" | tail -34 ;;
    bench-fp8-overlap) lb bench --model llama3.1-8b --samples "${SAMPLES:-1500}" --quantization fp8 --kv-cache-dtype fp8 \
                         --overlap ${BENCH_ARGS:-} 2>&1 | tee "$OUT/bench-fp8-overlap.txt" | tail -34 ;;
    eager) lb bench --model llama3.1-8b --samples "${SAMPLES:-1500}" --no-cuda-graphs 2>&1 \
             | tee "$OUT/eager.txt" | tail -34 ;;
    profile) lb bench --model llama3.1-8b --samples 600 --profile ${PROFILE_KIND:-mixed} ${BENCH_ARGS:-} 2>&1 \
               | tee "$OUT/profile-${PROFILE_KIND:-mixed}.txt" | grep -vE "^ *(aten|Memset|Memcpy|Lazy)" | tail -45 ;;
    sweep) python3 -m llmbench.agent.commands.bench_attention --sweep 2>&1 | tee "$OUT/sweep.txt" | tail -40 ;;
    hf) lb bench --model llama3.1-8b --samples 256 --compare hf 2>&1 \
          | tee "$OUT/hf.txt" | tail -18 ;;
    offline) AGENT_ARGS="--max-batch 1024" mesh offline --scenario Offline --max-samples 3000 \
               --target-qps "${OFFLINE_QPS:-36}" ;;
    # Steps are sized to the TPOT limit the queries carry; SERVER/INTERACTIVE_STEP_TOKENS caps them by hand.
    # Server runs ~50 QPS x 5 s = 250+ queries at once: past the agent's default --max-batch 256 (H100: +6 %).
    server) for q in ${SERVER_QPS:-24 30}; do
              AGENT_ARGS="--max-batch 1024 ${SERVER_STEP_TOKENS:+--max-step-tokens $SERVER_STEP_TOKENS}" mesh "server-$q" \
                --scenario Server --target-qps "$q"
            done ;;
    interactive) for q in ${INTERACTIVE_QPS:-8}; do
                   AGENT_ARGS="${INTERACTIVE_STEP_TOKENS:+--max-step-tokens $INTERACTIVE_STEP_TOKENS}" \
                     mesh "interactive-$q${INTERACTIVE_STEP_TOKENS:+-$INTERACTIVE_STEP_TOKENS}" --scenario Interactive --target-qps "$q"
                 done ;;
    *) echo "unknown phase $phase"; exit 2 ;;
  esac
  summary+=("$phase: $((SECONDS - start)) s")
done
echo; echo "== phases =="; printf '%s\n' "${summary[@]}"
for f in bench bench-fp8 bench-fp8-overlap eager hf; do
  [ -f "$OUT/$f.txt" ] && { echo "-- $f"; grep -hE "samples/s|roofline|transformers|steps|precision|rate measured|^\| all" "$OUT/$f.txt"; }
done
for f in "$OUT"/offline.txt "$OUT"/server-*.txt "$OUT"/interactive-*.txt; do
  [ -f "$f" ] && { echo "-- $(basename "$f" .txt)"; grep -hE "Scenario|Result is|samples per second|^99.00 percentile (first token|time to output token)" "$f"; }
done
