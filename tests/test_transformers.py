"""Tiny Hugging Face transformers (random weights, built from config objects: no hub access) exported
with both torch exporters, compiled with int64 token ids and compared with onnxruntime (issue 11).
Slow; skipped with a message when torch, transformers or onnxscript is absent."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

pytestmark = pytest.mark.slow

SEQ, VOCAB = 8, 100


def _transformers():
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    # A torchvision wheel built for another torch makes transformers' lazy model imports fail
    # ("operator torchvision::nms does not exist"); these text models never need it.
    import transformers.utils as utils
    import transformers.utils.import_utils as import_utils

    for module in (utils, import_utils):
        for name in ("is_torchvision_available", "is_torchvision_v2_available"):
            if hasattr(module, name):
                setattr(module, name, lambda: False)
    return transformers


def _model(name: str):
    t = _transformers()
    if name == "bert":
        from transformers.models.bert.modeling_bert import BertModel
        return BertModel(t.BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                      intermediate_size=64, max_position_embeddings=64)), True
    if name == "gpt2":
        from transformers.models.gpt2.modeling_gpt2 import GPT2Model
        return GPT2Model(t.GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=2, n_positions=64)), False
    if name == "distilbert":
        from transformers.models.distilbert.modeling_distilbert import DistilBertModel
        return DistilBertModel(t.DistilBertConfig(vocab_size=VOCAB, dim=32, n_layers=2, n_heads=2, hidden_dim=64,
                                                  max_position_embeddings=64)), True
    from transformers.models.t5.modeling_t5 import T5EncoderModel
    return T5EncoderModel(t.T5Config(vocab_size=VOCAB, d_model=32, d_kv=16, d_ff=64, num_layers=2, num_heads=2)), True


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
@pytest.mark.parametrize("name", ["bert", "gpt2", "distilbert", "t5"])
def test_tiny_transformer_matches_onnxruntime(name, dynamo, tmp_path):
    import torch

    ort = pytest.importorskip("onnxruntime")
    if dynamo:
        pytest.importorskip("onnxscript")
        if name == "t5":
            pytest.skip("torch 2.13's dynamo exporter fails on T5EncoderModel (aten.view of a transposed tensor)")
    from lltfi_mlir import compile_onnx

    torch.manual_seed(0)
    model, with_mask = _model(name)
    model.eval()
    model.config.return_dict = False  # a tuple out: the last hidden state first

    class LastHidden(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, *args):
            return self.inner(*args)[0]

    ids = torch.randint(0, VOCAB, (1, SEQ))
    args = (ids, torch.ones(1, SEQ, dtype=torch.int64)) if with_mask else (ids,)
    names = ["input_ids", "attention_mask"][:len(args)]
    path = tmp_path / f"{name}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            torch.onnx.export(LastHidden(model), args, str(path), input_names=names, opset_version=18, dynamo=True,
                              external_data=False)
        else:
            torch.onnx.export(LastHidden(model), args, str(path), input_names=names, opset_version=17, dynamo=False)
    feeds = [a.numpy() for a in args]
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, dict(zip(names, feeds)))[0]
    got = compile_onnx(str(path), tmp_path / "build").run(feeds)[0]
    assert got.shape == want.shape
    assert np.max(np.abs(got - want)) <= 1e-3 * max(1.0, float(np.max(np.abs(want))))
