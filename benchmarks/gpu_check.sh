#!/usr/bin/env bash
# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
#
# The GPU checks of issue 17 in one run, for a session lent a CUDA machine (about 10 minutes on
# an H200). Run from the repository root:
#
#   benchmarks/gpu_check.sh [OUT_DIR]          # default OUT_DIR: results
#
# 1. gpu_correctness.py: every decoder token-identical to the reference (tiny model) and the
#    CUDA-graph decoder to the dynamic one (full size).
# 2. gpu_bench.py: float16 and bfloat16 with the default and compiled decoders, and weight-only
#    int8 and int4 through torchao (decode tokens/s against the bandwidth bound, peak memory).
# 3. quant_agreement.py: teacher-forced top-1 agreement and logit error of int8 and int4
#    against float16 on the full-size architecture (random weights: numerical drift, not
#    accuracy).
#
# Machines without network: download the torchao wheel beside the repository first (see
# /work/.library/device/README.md, wheels in .whl/) and carry .whl; this script installs
# whatever .whl/ holds into /tmp/site before starting.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-results}
mkdir -p "$out"
export PYTHONPATH=kosmos_ros PYTHONUNBUFFERED=1
if compgen -G '.whl/*.whl' > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PYTHONPATH
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python3 benchmarks/gpu_correctness.py --out "$out/gpu_correctness.json" 2>&1 \
  | tee "$out/gpu_correctness.log"
python3 benchmarks/gpu_bench.py --dtypes float16 bfloat16 --quantizations int8 int4 \
  --decoders cuda_graph cuda_graph+compile --out "$out/gpu_bench.json" 2>&1 \
  | tee "$out/gpu_bench.log"
python3 benchmarks/quant_agreement.py --quantizations int8 int4 \
  --json "$out/quant_agreement.json" 2>&1 | tee "$out/quant_agreement.log"
