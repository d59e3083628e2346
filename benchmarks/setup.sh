#!/usr/bin/env bash
# Install what `python -m benchmarks.vs_lm_eval` needs into the active Python environment (the
# icl venv).
# lm-eval is pinned to the version the benchmark was written and checked against; torch is held
# at the venv's CPU build so that pip never swaps it for a multi-GB CUDA wheel.
set -euo pipefail
LM_EVAL_VERSION="${LM_EVAL_VERSION:-0.4.13}"
python -c 'import icl' 2>/dev/null || {
    echo "activate the icl venv first (e.g. source .venv/bin/activate)" >&2; exit 1; }
constraints="$(mktemp)"
trap 'rm -f "$constraints"' EXIT
torch_version="$(python -c 'import torch; print(torch.__version__.split("+")[0])')"
echo "torch==${torch_version}" >"$constraints"
# no [hf] extra: its torch/transformers/accelerate are icl's own dependencies, and peft is
# imported only when a PEFT adapter is asked for
python -m pip install --constraint "$constraints" "lm-eval==${LM_EVAL_VERSION}"
python -c 'import importlib.metadata as m, torch; print("lm-eval", m.version("lm-eval"), "torch", torch.__version__)'
