#!/usr/bin/env bash
# Install lltfi-mlir, compile the bundled LeNet-5 (Fashion-MNIST) and classify one test image natively.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q -e .
lltfi-mlir compile examples/lenet_fmnist/model.onnx -o build/lenet_fmnist
lltfi-mlir run build/lenet_fmnist --input examples/lenet_fmnist/inputs/0.npy
python3 -c "import json; d=json.load(open('examples/lenet_fmnist/labels.json')); print('true label of inputs/0.npy:', d['labels'][0], d.get('classes', [None]*10)[d['labels'][0]])"
