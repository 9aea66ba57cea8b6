"""Train CIFAR-size AlexNet (with LRN) and SqueezeNet (fire modules) on 3x32x32 Fashion-MNIST; export to ONNX.

Needs: /work/venv-torch (torch==2.13.0 onnx onnxruntime numpy; see train_lenet_cnn.py) and
       `apt-get install -y dataset-fashion-mnist`. Fully offline. No CIFAR download: Fashion-MNIST is
       zero-padded to 32x32 and replicated to 3 channels, so the models have CIFAR input shape.
Run:   /work/venv-torch/bin/python examples/train_cifar_size.py

Writes examples/alexnet_cifar/ and examples/squeezenet_cifar/: input 1x3x32x32 in [0,1], output 1x10;
legacy exporter, opset 17, static batch 1. LRN is exported as the ONNX LRN op (see LRNFn).
"""
import os
import sys
import time

import numpy as np
import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _data
from train_lenet_cnn import train

torch.set_num_threads(2)


class LRNFn(torch.autograd.Function):
    """torch's local_response_norm is a Python composite; the legacy exporter would spell it as
    ~10 ops. The symbolic makes it one ONNX LRN node (same maths for odd size)."""
    @staticmethod
    def forward(ctx, x, size, alpha, beta, k):
        return nn.functional.local_response_norm(x, size, alpha, beta, k)

    @staticmethod
    def symbolic(g, x, size, alpha, beta, k):
        return g.op("LRN", x, size_i=size, alpha_f=alpha, beta_f=beta, bias_f=k)


class LRN(nn.LocalResponseNorm):
    def forward(self, x):
        if torch.onnx.is_in_onnx_export():
            return LRNFn.apply(x, self.size, self.alpha, self.beta, self.k)
        return super().forward(x)


def alexnet():
    """AlexNet layout (conv-relu-LRN-pool x2, 3 conv, pool, 3 FC with dropout) scaled to 32x32."""
    return nn.Sequential(
        nn.Conv2d(3, 24, 5, padding=2), nn.ReLU(), LRN(5, 1e-4, 0.75, 2.0), nn.MaxPool2d(3, 2),   # 15
        nn.Conv2d(24, 48, 5, padding=2), nn.ReLU(), LRN(5, 1e-4, 0.75, 2.0), nn.MaxPool2d(3, 2),  # 7
        nn.Conv2d(48, 64, 3, padding=1), nn.ReLU(),
        nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(),
        nn.Conv2d(64, 48, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2),                          # 3
        nn.Flatten(),
        nn.Dropout(0.5), nn.Linear(48 * 3 * 3, 256), nn.ReLU(),
        nn.Dropout(0.5), nn.Linear(256, 128), nn.ReLU(),
        nn.Linear(128, 10))


class Fire(nn.Module):
    def __init__(self, cin, squeeze, expand):
        super().__init__()
        self.squeeze = nn.Sequential(nn.Conv2d(cin, squeeze, 1), nn.ReLU())
        self.e1 = nn.Sequential(nn.Conv2d(squeeze, expand, 1), nn.ReLU())
        self.e3 = nn.Sequential(nn.Conv2d(squeeze, expand, 3, padding=1), nn.ReLU())

    def forward(self, x):
        s = self.squeeze(x)
        return torch.cat([self.e1(s), self.e3(s)], 1)


def squeezenet():
    """SqueezeNet 1.1 layout scaled to 32x32: ceil-mode max pools, fire modules, conv10 + global avg pool."""
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2, ceil_mode=True),  # 16
        Fire(32, 8, 32), Fire(64, 8, 32), nn.MaxPool2d(3, 2, ceil_mode=True),           # 8
        Fire(64, 16, 48), Fire(96, 16, 48), nn.MaxPool2d(3, 2, ceil_mode=True),         # 4
        Fire(96, 24, 64), Fire(128, 24, 64),
        nn.Dropout(0.5), nn.Conv2d(128, 10, 1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten())


def squeezenet_init(model):
    """torchvision's SqueezeNet init; with torch's default init the ReLU before the pool starts dead."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            if m.out_channels == 10:
                nn.init.normal_(m.weight, 0.0, 0.01)
            else:
                nn.init.kaiming_uniform_(m.weight)
            nn.init.zeros_(m.bias)
    return model


def to_cifar_shape(x):
    x = np.pad(x, ((0, 0), (0, 0), (2, 2), (2, 2)))
    return np.ascontiguousarray(np.repeat(x, 3, axis=1), dtype=np.float32)


def main():
    xtr, ytr, xte, yte = _data.load_fashion_mnist()
    n_train = 30000  # first half of the training set keeps each run to a few CPU minutes
    xtr, ytr, xte = to_cifar_shape(xtr[:n_train]), ytr[:n_train], to_cifar_shape(xte)
    for name, build, epochs, arch in [
            ("alexnet_cifar", alexnet, 2, "CIFAR-size AlexNet (5 conv, 2 LRN, 3 maxpool, 3 FC)"),
            ("squeezenet_cifar", lambda: squeezenet_init(squeezenet()), 4,
             "CIFAR-size SqueezeNet 1.1 (6 fire modules, ceil-mode pools, GAP)")]:
        print(f"== {name}")
        torch.manual_seed(0)
        np.random.seed(0)
        model = build()
        t0 = time.time()
        acc = train(model, xtr, ytr, xte, yte, epochs=epochs, lr=2e-3 if name == "alexnet_cifar" else 1e-3)
        d = os.path.join(_data.HERE, name)
        os.makedirs(d, exist_ok=True)
        path = os.path.join(d, "model.onnx")
        torch.onnx.export(model, (torch.zeros(1, 3, 32, 32),), path, dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["output"], do_constant_folding=True)
        idx = _data.pick_test_samples(yte)
        xs, ys = [xte[i] for i in idx], [int(yte[i]) for i in idx]
        _data.write_example(
            name, xs,
            {"labels": ys, "classes": _data.FMNIST_CLASSES, "test_indices": idx,
             "dataset": "Fashion-MNIST zero-padded to 32x32, replicated to 3 channels",
             "test_accuracy": round(acc, 4), "input_range": "[0, 1]"},
            f"{arch}, input 1x3x32x32, torch legacy export opset 17, static batch.\n"
            f"Trained by examples/train_cifar_size.py on Fashion-MNIST padded to 3x32x32 (first {n_train} "
            f"training images, {epochs} epochs, {time.time() - t0:.0f}s CPU); test accuracy {acc:.2%}.")
        outs = _data.verify_onnx(path, xs, ys)
        with torch.no_grad():
            ref = model(torch.from_numpy(np.stack(xs))).numpy()
        assert np.allclose(ref, np.concatenate(outs), atol=1e-4), np.abs(ref - np.concatenate(outs)).max()
        print(f"  {name}: ops {_data.op_summary(path)}, {os.path.getsize(path)} bytes, "
              f"{sum(p.numel() for p in model.parameters())} params")


if __name__ == "__main__":
    main()
