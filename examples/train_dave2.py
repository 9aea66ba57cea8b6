"""Train a Dave-2 style steering CNN on synthetic road images; export to ONNX.

Needs: /work/venv-torch (torch==2.13.0 onnx onnxruntime numpy; see train_lenet_cnn.py). Fully offline:
the data are numpy-drawn roads (fixed seed) whose steering target is a function of the road's curve
and offset. The model need not drive; it gives varied, meaningful outputs.
Run:   /work/venv-torch/bin/python examples/train_dave2.py

Writes examples/dave2/: input 1x3x66x200 in [0,1], output 1x1 = 2*atan(x) (radians);
legacy exporter, opset 17, static batch 1. Architecture as NVIDIA's Dave-2 (5 conv, 5 FC, ELU) but
the first FC is 100 wide instead of 1164 (1164 makes the file ~6.4 MB).
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
H, W, HORIZON = 66, 200, 22
FC1 = 100  # NVIDIA's 1164 would make model.onnx ~6.4 MB


def make_roads(n, seed):
    """n RGB images (n,3,66,200) in [0,1] and steering targets (n,) in radians."""
    rng = np.random.RandomState(seed)
    curve = rng.uniform(-1, 1, n).astype(np.float32)     # bend of the road ahead
    offset = rng.uniform(-1, 1, n).astype(np.float32)    # car's lateral offset in the lane
    target = np.clip(0.7 * curve - 0.3 * offset, -1, 1).astype(np.float32)
    y = np.arange(H, dtype=np.float32)[:, None]
    x = np.arange(W, dtype=np.float32)[None, :]
    depth = np.clip((y - HORIZON) / (H - HORIZON), 0, 1)   # 0 at horizon, 1 at bottom
    imgs = np.empty((n, 3, H, W), np.float32)
    for i in range(n):
        sky, grass, road = rng.uniform(0.3, 0.9, 3), rng.uniform(0.1, 0.6, 3), rng.uniform(0.2, 0.5)
        grass[1] = min(1.0, grass[1] + 0.3)
        center = W / 2 - offset[i] * 30 * depth + curve[i] * 90 * (1 - depth) ** 2
        half = 4 + 70 * depth
        on_road = (np.abs(x - center) < half) & (y >= HORIZON)
        line = (np.abs(x - center) < 0.5 + 1.5 * depth) & (y >= HORIZON) & (((y + i) // 4) % 2 == 0)
        img = np.where(y < HORIZON, sky[:, None, None] * (0.7 + 0.3 * y / HORIZON), grass[:, None, None])
        img = np.where(on_road, road, img)
        img = np.where(line, 0.95, img)
        imgs[i] = np.clip(img + rng.normal(0, 0.04, img.shape), 0, 1)
    return imgs, target


class Dave2(nn.Module):
    def __init__(self):
        super().__init__()
        a = nn.ELU
        self.features = nn.Sequential(
            nn.Conv2d(3, 24, 5, stride=2), a(), nn.Conv2d(24, 36, 5, stride=2), a(),
            nn.Conv2d(36, 48, 5, stride=2), a(), nn.Conv2d(48, 64, 3), a(), nn.Conv2d(64, 64, 3), a(),
            nn.Flatten())
        self.head = nn.Sequential(
            nn.Linear(64 * 1 * 18, FC1), a(), nn.Linear(FC1, 100), a(),
            nn.Linear(100, 50), a(), nn.Linear(50, 10), a(), nn.Linear(10, 1))

    def forward(self, x):
        return 2 * torch.atan(self.head(self.features(x)))


def main():
    torch.manual_seed(0)
    np.random.seed(0)
    xtr, ytr = make_roads(6000, seed=1)
    xte, yte = make_roads(500, seed=2)
    model = Dave2()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    xt, yt = torch.from_numpy(xtr), torch.from_numpy(ytr)[:, None]
    g = torch.Generator().manual_seed(0)
    for ep in range(5):
        model.train()
        t0 = time.time()
        perm = torch.randperm(len(yt), generator=g)
        for i in range(0, len(perm), 64):
            b = perm[i:i + 64]
            opt.zero_grad()
            loss = nn.functional.mse_loss(model(xt[b]), yt[b])
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            pred = model(torch.from_numpy(xte)).numpy().ravel()
        mse = float(((pred - yte) ** 2).mean())
        print(f"  epoch {ep + 1}: train loss {loss.item():.4f} test MSE {mse:.4f} "
              f"(target var {yte.var():.4f}) ({time.time() - t0:.1f}s)")
    mae = float(np.abs(pred - yte).mean())

    d = os.path.join(_data.HERE, "dave2")
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, "model.onnx")
    torch.onnx.export(model, (torch.zeros(1, 3, H, W),), path, dynamo=False, opset_version=17,
                      input_names=["input"], output_names=["output"], do_constant_folding=True)
    idx = [int(i) for i in np.argsort(yte)[np.linspace(0, len(yte) - 1, 5).astype(int)]]  # spread of angles
    xs, ys = [xte[i] for i in idx], [float(yte[i]) for i in idx]
    _data.write_example(
        "dave2", xs,
        {"targets": [round(v, 5) for v in ys], "test_indices": idx,
         "dataset": "synthetic roads (train_dave2.make_roads, seed 2 = test set)",
         "output": "steering angle in radians, 2*atan(x)", "test_mse": round(mse, 5),
         "test_mae": round(mae, 5), "target_variance": round(float(yte.var()), 5), "input_range": "[0, 1]"},
        f"Dave-2 style steering CNN (5 conv, 5 FC 100-100-50-10-1, ELU, out 2*atan), input 1x3x66x200, "
        f"torch legacy export opset 17, static batch.\nTrained by examples/train_dave2.py on synthetic "
        f"numpy road images; test MSE {mse:.4f} rad^2 (MAE {mae:.3f} rad, target variance {yte.var():.3f}).")
    outs = _data.verify_onnx(path, xs, ys, classify=False)
    with torch.no_grad():
        ref = model(torch.from_numpy(np.stack(xs))).numpy()
    assert np.allclose(ref, np.concatenate(outs), atol=1e-4)
    print(f"  dave2: ops {_data.op_summary(path)}, {os.path.getsize(path)} bytes, "
          f"{sum(p.numel() for p in model.parameters())} params")


if __name__ == "__main__":
    main()
