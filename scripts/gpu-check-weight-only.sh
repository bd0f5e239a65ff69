#!/usr/bin/env bash
# Exercise the GPU weight-only compressors (int8wo, int4wo: compressors/weight_only.py) on a CUDA machine.
# Run from anywhere in a checkout, with the project's environment active:
#
#   bash scripts/gpu-check-weight-only.sh          # bench results under $OUT/gpu-wo (default reports/gpu-wo)
#
# 1. the GPU tests (tests/test_weight_only.py + tests/test_gpu.py, marker gpu);
# 2. the tiny BERT bench on CUDA with chains none, int8wo and int4wo. tiny-bert has hidden size 32, so int4wo
#    runs with group_size=32 there (the default 128 does not divide 32: a one-line error by design).
# Both steps always run; the exit status is non-zero when either failed. Needs torch.cuda.is_available().
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1  # everything here is built locally
out="${OUT:-reports}/gpu-wo"

python - <<'EOF' || exit 1
import sys

import torch
import torchao

if not torch.cuda.is_available():
    sys.exit("gpu-check-weight-only: torch.cuda.is_available() is False here; run this on a CUDA machine")
cap = torch.cuda.get_device_capability()
print(f"torch {torch.__version__}, torchao {torchao.__version__}, {torch.cuda.get_device_name()} (sm {cap[0]}{cap[1]})")
EOF

status=0
echo "== GPU tests"
pytest tests/test_weight_only.py tests/test_gpu.py -m gpu -q -p no:cacheprovider || status=1

echo "== tiny-bert bench on CUDA: none, int8wo, int4wo:group_size=32 -> $out"
pytest bench/ --benchmark-only -p no:cacheprovider --bench-device cuda --bench-task tiny-bert \
    --bench-chain none --bench-chain int8wo --bench-chain int4wo:group_size=32 \
    --bench-out "$out" --bench-quiet || status=1

exit "$status"
