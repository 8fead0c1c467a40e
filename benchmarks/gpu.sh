#!/usr/bin/env bash
# The GPU figures of docs/performance.md in one run (a few minutes on one H100 or H200):
#
#   bash benchmarks/gpu.sh [OUT_DIR]       # default benchmarks/results
#
# 1. our train step against sentence-transformers' on CUDA, bfloat16, T5 v1.1 small at
#    batch 64 (32/128 tokens), with MFU against the measured bfloat16 matmul rate and the
#    card's nominal peak (train_throughput.py);
# 2. the same at T5 v1.1 base, batch 128, 64/256 tokens;
# 3. GradCache's memory row: the compiled train step's temporary memory, T5 v1.1 base at
#    batch 512, 64/256 tokens, plain and with chunks of 32, bfloat16 (grad_cache.py, no
#    timing).
#
# It needs JAX with CUDA, Flax, optax, torch, transformers and sentence-transformers, and
# neither gin nor SeqIO: the scripts import only the model, loss and trainer modules, so it
# runs from the source tree (PYTHONPATH=.) without installing the package. Each step writes
# its JSON as soon as it ends, so a run cut short keeps the steps before. The dtype is named
# (bfloat16 is also the GPU's default), and a contender whose step hangs is stopped and
# reported as timed out (train_throughput.py's --step_timeout, 300 s).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-benchmarks/results}
mkdir -p "$out"
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
python=${PYTHON:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
"$python" benchmarks/train_throughput.py --size small --batch 64 --lengths 32,128 --steps 10 \
  --dtype bfloat16 --out "$out/train_throughput_gpu_small.json"
"$python" benchmarks/train_throughput.py --size base --batch 128 --lengths 64,256 --steps 10 \
  --dtype bfloat16 --out "$out/train_throughput_gpu_base.json"
"$python" benchmarks/grad_cache.py --dtypes bfloat16 --rounds 0 \
  --out "$out/grad_cache_gpu.json"
