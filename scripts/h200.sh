#!/usr/bin/env bash
# One call on the H200 machine (device tool, carry .whl): GPU tests, kernel and engine benchmarks, and
# short LoadGen runs through the mesh; a short table last. Usage: scripts/h200.sh [phase ...]
# phases: tests kernels fused bench eager profile hf offline server (default: all). Figures land in $OUT (or ./out).
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-$PWD/out}; mkdir -p "$OUT"
phases=${*:-tests kernels fused bench eager profile hf offline server}
# Carried wheels (LoadGen etc.) and the project itself, without touching the machine's packages.
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
mkdir -p /tmp/site/llmbench
for d in cli common proto agent coordinator tui; do ln -sfn "$PWD/$d" "/tmp/site/llmbench/$d"; done
export PYTHONPATH=/tmp/site
lb() { python3 -m llmbench.cli "$@"; }
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c 'import torch, triton; print("torch", torch.__version__, "triton", triton.__version__)'
summary=()
for phase in $phases; do
  start=$SECONDS
  case $phase in
    tests) python3 -m pytest -q -p no:cacheprovider -s tests/test_engine_model.py tests/test_triton_attention.py \
             tests/test_engine_triton.py tests/test_triton_fused.py 2>&1 | tee "$OUT/tests.txt" \
             | grep -E "passed|failed|FAILED|rel L2|Error" ;;
    kernels) python3 -m llmbench.agent.triton_bench 2>&1 | tee "$OUT/kernels.txt" | tail -25 ;;
    fused) python3 -m llmbench.agent.triton_fused 2>&1 | tee "$OUT/fused.txt" | tail -12 ;;
    bench) lb bench --model llama3.1-8b --samples "${SAMPLES:-1500}" ${BENCH_ARGS:-} 2>&1 | tee "$OUT/bench.txt" | tail -16 ;;
    eager) lb bench --model llama3.1-8b --samples "${SAMPLES:-1500}" --no-cuda-graphs 2>&1 \
             | tee "$OUT/eager.txt" | tail -16 ;;
    profile) lb bench --model llama3.1-8b --samples 600 --profile 2>&1 | tee "$OUT/profile.txt" | tail -45 ;;
    hf) lb bench --model llama3.1-8b --samples 256 --compare hf --hf-samples 256 --hf-batch 128 2>&1 \
          | tee "$OUT/hf.txt" | tail -18 ;;
    offline|server) echo "phase $phase: see scripts/h200_mesh.sh" ;;
    *) echo "unknown phase $phase"; exit 2 ;;
  esac
  summary+=("$phase: $((SECONDS - start)) s")
done
echo; echo "== phases =="; printf '%s\n' "${summary[@]}"
for f in bench eager hf; do
  [ -f "$OUT/$f.txt" ] && { echo "-- $f"; grep -hE "samples/s|roofline|transformers|steps" "$OUT/$f.txt"; }
done
