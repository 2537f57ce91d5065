#!/usr/bin/env bash
# Creates the reference venv (.venv-ref, git-ignored) used by the fixture scripts in scripts/.
# cargo test never needs it: the fixtures these scripts write are committed.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv-ref
.venv-ref/bin/pip install --quiet --upgrade pip
.venv-ref/bin/pip install --quiet torch torchvision timm segmentation-models-pytorch scikit-learn safetensors libsvm-official torchmetrics
.venv-ref/bin/python -c "import torch, sklearn; print('torch', torch.__version__, 'sklearn', sklearn.__version__)"
