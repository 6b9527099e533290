#!/usr/bin/env bash
# Our CNN against ONNX Runtime (forward, batch 1 and 32) and against stock candle (training step,
# batch 32), in one run on this machine. Exports the shipped weights to ONNX first.
#
# Needs python3 with venv; installs the pinned scripts/onnx/requirements.txt into target/onnx-venv
# on first use (network access to PyPI then).
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/onnx-venv
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q -r scripts/onnx/requirements.txt
fi
mkdir -p target/onnx
"$venv/bin/python" scripts/onnx/export_onnx.py weights/cxrnet.json target/onnx/cxrnet.onnx
CXR_ORT_PYTHON="$PWD/$venv/bin/python" cargo bench --bench vs_onnx
