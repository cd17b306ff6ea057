"""Encoder graph: one 30 s log-mel window → every decoder layer's cross-attention K and V.

The decoder's cross-attention projections are folded in here so the per-token decoder
never recomputes them. Keys come out as [1, H, Dh, 1500] and values as [1, H, 1500, Dh]:
the layouts the decoder multiplies with directly, without a transpose per step.
"""

from __future__ import annotations

import numpy as np
import onnx

from amanuensis.audio import N_FRAMES
from amanuensis.export.builder import (
    GraphBuilder,
    Weights,
    attend,
    gelu,
    layer_norm,
    linear,
    merge_heads,
    mlp_block,
    scale_query,
    split_heads,
)
from amanuensis.export.io_names import cross_kv_names
from amanuensis.models import ModelDims


def _encoder_block(g: GraphBuilder, x: str, w: Weights, dims: ModelDims) -> str:
    d, h, t = dims.n_audio_state, dims.n_audio_head, dims.n_audio_ctx
    dh = d // h
    attn = w.sub("self_attention")
    normed = layer_norm(g, x, attn.sub("layer_norm"))
    qkv = attn.sub("linear_0")
    q = split_heads(g, linear(g, normed, qkv, slice(0, d)), (1, t, h, dh), False, attn.prefix)
    k = split_heads(g, linear(g, normed, qkv, slice(d, 2 * d)), (1, t, h, dh), True, attn.prefix)
    v = split_heads(g, linear(g, normed, qkv, slice(2 * d, 3 * d)), (1, t, h, dh), False, attn.prefix)
    context = attend(g, scale_query(g, q, dh, attn.prefix), k, v, None, attn.prefix)
    out = linear(g, merge_heads(g, context, (1, t, d), attn.prefix), attn.sub("linear_1"))
    x = g.op("Add", [x, out], attn.prefix)
    return mlp_block(g, x, w.sub("ffn"))


def build_encoder(weights: dict[str, np.ndarray], dims: ModelDims) -> onnx.ModelProto:
    g = GraphBuilder("whisper_encoder")
    w = Weights(weights, "encoder")
    mel = g.input("mel", np.float32, [1, dims.n_mels, N_FRAMES])
    conv1 = g.op(
        "Conv",
        [mel, g.weight("encoder/conv1/weight", w["conv1/weight"]), g.weight("encoder/conv1/bias", w["conv1/bias"])],
        "encoder/conv1",
        kernel_shape=[3],
        pads=[1, 1],
    )
    x = gelu(g, conv1, "encoder/conv1")
    conv2 = g.op(
        "Conv",
        [x, g.weight("encoder/conv2/weight", w["conv2/weight"]), g.weight("encoder/conv2/bias", w["conv2/bias"])],
        "encoder/conv2",
        kernel_shape=[3],
        pads=[1, 1],
        strides=[2],
    )
    x = gelu(g, conv2, "encoder/conv2")
    x = g.op("Transpose", [x], "encoder", perm=[0, 2, 1])  # [1, 1500, D]
    positions = g.weight("encoder/position_encodings", w["position_encodings/encodings"])
    x = g.op("Add", [x, positions], "encoder")
    for layer in range(dims.n_audio_layer):
        x = _encoder_block(g, x, w.sub(f"layer_{layer}"), dims)
    x = layer_norm(g, x, w.sub("layer_norm"))

    d, h, t = dims.n_text_state, dims.n_text_head, dims.n_audio_ctx
    dh = d // h
    for layer in range(dims.n_text_layer):
        kv = Weights(weights, f"decoder/layer_{layer}/attention/linear_1")
        k = split_heads(g, linear(g, x, kv, slice(0, d)), (1, t, h, dh), True, kv.prefix)
        v = split_heads(g, linear(g, x, kv, slice(d, 2 * d)), (1, t, h, dh), False, kv.prefix)
        k_name, v_name = cross_kv_names(layer)
        g.output(k, k_name, np.float32, [1, h, dh, t])
        g.output(v, v_name, np.float32, [1, h, t, dh])
    return g.model()
