#!/usr/bin/env bash
# One call on a GPU machine: train for --minutes, hand back weights, metrics and the curve.
#   weights/gpu_recipe.sh OUT [--minutes M] [--device D] [--pack PACK] [--work DIR]
# Installs nothing: it runs this checkout's mimocli with the python that has torch ($PYTHON,
# default python3). See weights/gpu_recipe.py for what it does and README.md, "Training".
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export PYTHONPATH="$(dirname "$here")${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
exec "${PYTHON:-python3}" "$here/gpu_recipe.py" "$@"
