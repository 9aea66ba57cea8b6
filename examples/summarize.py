"""Print the markdown table of examples/README.md from the files in examples/*/.

Needs: /work/venv-torch (onnx). Run: /work/venv-torch/bin/python examples/summarize.py
"""
import glob
import json
import os

import numpy as np
import onnx
from _data import HERE, op_summary


def dims(vi):
    return "x".join(str(d.dim_param or d.dim_value) for d in vi.type.tensor_type.shape.dim)


def main():
    print("| name | producer | opset | input | output | ONNX ops (count) | params | file size | test metric |")
    print("|---|---|---|---|---|---|---|---|---|")
    for path in sorted(glob.glob(os.path.join(HERE, "*", "model.onnx"))):
        name = os.path.basename(os.path.dirname(path))
        m = onnx.load(path)
        opset = [o.version for o in m.opset_import if o.domain in ("", "ai.onnx")][0]
        params = sum(int(np.prod(i.dims)) for i in m.graph.initializer if i.data_type == onnx.TensorProto.FLOAT)
        with open(os.path.join(os.path.dirname(path), "labels.json")) as handle:
            meta = json.load(handle)
        metric = (f"acc {meta['test_accuracy']:.2%}" if "test_accuracy" in meta
                  else f"MSE {meta['test_mse']} (MAE {meta['test_mae']} rad)")
        ops = ", ".join(f"{k} {v}" for k, v in op_summary(path).items())
        x = np.load(os.path.join(os.path.dirname(path), "inputs", "0.npy"))
        assert x.dtype == np.float32 and list(x.shape) == [
            1 if d.dim_param else d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim], name
        producer = f"{m.producer_name} {m.producer_version.replace(' None', '')}"
        print(f"| {name} | {producer} | {opset} | {m.graph.input[0].name} "
              f"{dims(m.graph.input[0])} | {dims(m.graph.output[0])} | {ops} | {params:,} | "
              f"{os.path.getsize(path) / 1024:.0f} KiB | {metric} |")


if __name__ == "__main__":
    main()
