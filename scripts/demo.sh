#!/usr/bin/env bash
# Install lltfi-mlir, compile the bundled LeNet-5 (Fashion-MNIST), classify one test image natively,
# then run a 500-trial fault-injection campaign on it and print the SDC rates.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q -e .
lltfi-mlir compile examples/lenet_fmnist/model.onnx -o lltfi-out/lenet_fmnist/build
lltfi-mlir run lltfi-out/lenet_fmnist/build --input examples/lenet_fmnist/inputs/0.npy
python3 -c "import json; d = json.load(open('examples/lenet_fmnist/labels.json')); \
print('true label of inputs/0.npy:', d['labels'][0], '=', d['classes'][d['labels'][0]])"
lltfi-mlir inject lltfi-out/lenet_fmnist/build -c examples/configs/lltfi_default.yaml --runs 500 --seed 1
