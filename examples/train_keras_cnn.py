"""Train the small CNN of train_lenet_cnn.py written in Keras on Fashion-MNIST; convert with tf2onnx.

Needs: a TensorFlow venv (python3 -m venv /work/venv-tf &&
       /work/venv-tf/bin/pip install tensorflow-cpu==2.21.0 tf2onnx==1.17.0 numpy onnxruntime)
       and `apt-get install -y dataset-fashion-mnist`. Fully offline.
Run:   /work/venv-tf/bin/python examples/train_keras_cnn.py

Writes examples/cnn_fmnist_keras/: NHWC input 1x28x28x1 in [0,1], output 1x10 (logits);
tf2onnx opset 17, static batch 1, graph kept exactly as tf2onnx produced it.
tf2onnx.convert.from_keras fails on Keras 3 (KeyError 'keras_tensor_N' on the output names), so the
model is wrapped in a tf.function and converted with tf2onnx.convert.from_function.
"""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np
import tensorflow as tf
import tf2onnx

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _data

NAME = "cnn_fmnist_keras"


def small_cnn():
    L = tf.keras.layers
    return tf.keras.Sequential([
        tf.keras.Input((28, 28, 1)),
        L.Conv2D(8, 3, padding="same", activation="relu"), L.MaxPooling2D(2),
        L.Conv2D(16, 3, padding="same", activation="relu"), L.MaxPooling2D(2),
        L.Flatten(),
        L.Dense(64, activation="relu"),
        L.Dense(10)])


def main():
    tf.keras.utils.set_random_seed(0)
    tf.config.threading.set_intra_op_parallelism_threads(2)
    xtr, ytr, xte, yte = _data.load_fashion_mnist()
    xtr, xte = xtr.transpose(0, 2, 3, 1), xte.transpose(0, 2, 3, 1)  # NCHW -> NHWC
    model = small_cnn()
    model.compile(optimizer=tf.keras.optimizers.Adam(1e-3),
                  loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(xtr, ytr, batch_size=128, epochs=5, verbose=2, shuffle=True)
    _, acc = model.evaluate(xte, yte, batch_size=1000, verbose=0)
    print(f"  {NAME}: test accuracy {acc:.4f}")

    d = os.path.join(_data.HERE, NAME)
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, "model.onnx")
    fn = tf.function(lambda x: {"output": model(x, training=False)})
    spec = (tf.TensorSpec((1, 28, 28, 1), tf.float32, name="input"),)
    tf2onnx.convert.from_function(fn, input_signature=spec, opset=17, output_path=path)

    idx = _data.pick_test_samples(yte)
    xs, ys = [xte[i] for i in idx], [int(yte[i]) for i in idx]
    _data.write_example(
        NAME, xs,
        {"labels": ys, "classes": _data.FMNIST_CLASSES, "test_indices": idx, "dataset": "Fashion-MNIST",
         "layout": "NHWC", "test_accuracy": round(float(acc), 4), "input_range": "[0, 1]"},
        f"Small CNN (same architecture as cnn_fmnist) written in Keras 3 / TF {tf.__version__}, NHWC input 1x28x28x1, "
        f"converted by tf2onnx {tf2onnx.__version__} (from_function), opset 17, static batch.\n"
        f"Trained by examples/train_keras_cnn.py (Adam, 5 epochs, CPU, seeded); test accuracy {acc:.2%}.")
    outs = _data.verify_onnx(path, xs, ys)
    ref = model(np.stack(xs), training=False).numpy()
    assert np.allclose(ref, np.concatenate(outs), atol=1e-4), np.abs(ref - np.concatenate(outs)).max()
    print(f"  {NAME}: ops {_data.op_summary(path)}, {os.path.getsize(path)} bytes, {model.count_params()} params")


if __name__ == "__main__":
    main()
