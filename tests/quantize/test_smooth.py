"""SmoothQuant scaling folded into a LayerNorm and its readers changes no number in float."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort

from amanuensis import export
from amanuensis.export import GraphKind
from amanuensis.quantize.smooth import smooth, smoothable

from ..conftest import sqnr_db


def test_folded_scales_keep_the_float_encoder(tiny, mel_window) -> None:
    path = export.graph_path(tiny.checkpoint, GraphKind.ENCODER)
    model = onnx.load(str(path))
    targets = smoothable(model)
    assert "encoder/layer_0/ffn/linear_0/MatMul" in targets
    assert "encoder/layer_0/self_attention/MatMul_1" not in targets  # reads the softmax, not a LayerNorm
    norm_output = targets["encoder/layer_0/self_attention/linear_0/MatMul"]
    rng = np.random.default_rng(0)
    scales = smooth(model, norm_output, rng.uniform(0.1, 30.0, 384).astype(np.float32), alpha=0.5)
    assert not np.allclose(scales, 1.0)
    feed = {"mel": mel_window[None]}
    names = ["cross_k_0", "cross_v_3"]
    reference = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(names, feed)
    smoothed = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(names, feed)
    for r, s in zip(reference, smoothed, strict=True):
        assert sqnr_db(r, s) > 60.0  # float rounding only
