"""Decoder graphs.

``build_decoder_step`` is the product: one token per call for a fixed batch, a fixed-size
self-attention KV cache (``n_text_ctx`` = 448 slots) with an additive mask, and the token's
position as an input. It returns logits and only the new token's K/V; the host writes those
into its cache, so no cache is copied through the graph.

``build_decoder_full`` recomputes a whole prefix without a cache. It exists to check the
cached step against (tests), never for transcription.

With ``alignment_heads``, a prefill block also returns those heads' cross-attention scores for
its tokens: what word timestamps are read from (``amanuensis.aligner``).
"""

from __future__ import annotations

import numpy as np
import onnx

from amanuensis.export.builder import (
    GraphBuilder,
    Weights,
    attend,
    layer_norm,
    linear,
    merge_heads,
    mlp_block,
    scale_query,
    split_heads,
)
from amanuensis.export.io_names import MASKED_SCORE, cross_kv_names, new_kv_names, self_kv_names
from amanuensis.models import ModelDims


def _embed(g: GraphBuilder, w: Weights, tokens: str, positions: str) -> tuple[str, str]:
    """Token plus learned position embedding; returns (hidden, embedding matrix name)."""
    embedding = g.weight("decoder/embeddings/weight", w["embeddings/weight"])
    pos_table = g.weight("decoder/position_encodings", w["position_encodings/encodings"])
    x = g.op("Gather", [embedding, tokens], "decoder/embed", axis=0)
    pos = g.op("Gather", [pos_table, positions], "decoder/embed", axis=0)
    return g.op("Add", [x, pos], "decoder/embed"), embedding


def _cross_attention(
    g: GraphBuilder, x: str, w: Weights, layer: int, dims: ModelDims, batch: int, n_tokens: int
) -> tuple[str, str]:
    """Returns the layer's output and its scores q·k/√Dh over the audio frames, [B, H, T, frames]
    (the nodes are attend's, in its order, so the step graph is what it always was)."""
    d, h = dims.n_text_state, dims.n_text_head
    dh = d // h
    normed = layer_norm(g, x, w.sub("layer_norm"))
    q = split_heads(g, linear(g, normed, w.sub("linear_0")), (batch, n_tokens, h, dh), False, w.prefix)
    k_name, v_name = cross_kv_names(layer)
    scores = g.op("MatMul", [scale_query(g, q, dh, w.prefix), k_name], w.prefix)
    context = g.op("MatMul", [g.op("Softmax", [scores], w.prefix, axis=-1), v_name], w.prefix)
    out = linear(g, merge_heads(g, context, (batch, n_tokens, d), w.prefix), w.sub("linear_2"))
    return g.op("Add", [x, out], w.prefix), scores


def _logits(g: GraphBuilder, x: str, w: Weights, embedding: str, rows: int, dims: ModelDims) -> str:
    """Final norm, then logits against the tied embedding (Gemm transB: no transposed copy)."""
    x = layer_norm(g, x, w.sub("layer_norm"))
    x = g.op("Reshape", [x, g.const([rows, dims.n_text_state])], "decoder/logits")
    return g.op("Gemm", [x, embedding], "decoder/logits", transB=1)


def _add_cross_inputs(g: GraphBuilder, dims: ModelDims) -> None:
    h, dh, t = dims.n_text_head, dims.n_text_state // dims.n_text_head, dims.n_audio_ctx
    for layer in range(dims.n_text_layer):
        k_name, v_name = cross_kv_names(layer)
        g.input(k_name, np.float32, [1, h, dh, t])  # shared by every beam: MatMul broadcasts
        g.input(v_name, np.float32, [1, h, t, dh])


def build_decoder_step(
    weights: dict[str, np.ndarray],
    dims: ModelDims,
    batch: int,
    n_tokens: int = 1,
    alignment_heads: list[tuple[int, int]] | None = None,
) -> onnx.ModelProto:
    """One token per hypothesis; or with ``n_tokens`` > 1 (batch 1), a prefill block; with
    ``alignment_heads`` ((layer, head) pairs), a block that outputs ``alignment_scores``
    [len(heads), n_tokens, frames], those heads' q·k/√Dh, and its K/V, but no logits (so no
    vocabulary projection either).

    A block takes ``n_tokens`` consecutive tokens from position ``offset`` (causal among
    themselves, after the cached ones), returns their K/V and the logits of the token at index
    ``last`` only (a prompt shorter than the block is padded after its end; padding is never
    attended to by the real tokens). The block's extra nodes have scopes of their own, so the step
    graph this code builds stays node for node what it was.
    """
    block = n_tokens > 1
    if block and batch != 1:
        raise ValueError("a prefill block is built for batch 1")
    name = f"whisper_decoder_prefill_t{n_tokens}" if block else f"whisper_decoder_step_b{batch}"
    if alignment_heads:
        name = f"whisper_decoder_alignment_t{n_tokens}"
    picked: list[str] = []
    g = GraphBuilder(name)
    w = Weights(weights, "decoder")
    d, h, ctx = dims.n_text_state, dims.n_text_head, dims.n_text_ctx
    dh = d // h
    tokens = g.input("tokens", np.int64, [batch, n_tokens])
    offset = g.input("offset", np.int64, [1])
    mask = g.input("mask", np.float32, [1, ctx])  # 0 for filled cache slots, MASKED_SCORE otherwise
    # index in the block whose logits are wanted (an alignment block gives scores, no logits)
    last = g.input("last", np.int64, [1]) if block and not alignment_heads else None
    for layer in range(dims.n_text_layer):
        k_name, v_name = self_kv_names(layer)
        g.input(k_name, np.float32, [batch, h, dh, ctx])
        g.input(v_name, np.float32, [batch, h, ctx, dh])
    _add_cross_inputs(g, dims)

    positions = offset
    causal = None
    if block:  # padding past the last context slot reuses its position: it is never read
        ramp = g.op("Add", [offset, g.const(list(range(n_tokens)))], "decoder/prefill")
        positions = g.op("Min", [ramp, g.const([ctx - 1])], "decoder/prefill")
        causal = g.weight(
            "decoder/prefill/causal_mask", np.triu(np.full((n_tokens, n_tokens), MASKED_SCORE, np.float32), k=1)
        )
    x, embedding = _embed(g, w, tokens, positions)  # [B, T, D]
    mask4 = g.op("Reshape", [mask, g.const([1, 1, 1, ctx])], "decoder/mask")
    for layer in range(dims.n_text_layer):
        lw = w.sub(f"layer_{layer}")
        attn = lw.sub("self_attention")
        normed = layer_norm(g, x, attn.sub("layer_norm"))
        fused = attn.sub("linear_0")
        shape = (batch, n_tokens, h, dh)
        q = split_heads(g, linear(g, normed, fused, slice(0, d)), shape, False, attn.prefix)
        k_new = split_heads(g, linear(g, normed, fused, slice(d, 2 * d)), shape, True, attn.prefix)
        v_new = split_heads(g, linear(g, normed, fused, slice(2 * d, 3 * d)), shape, False, attn.prefix)
        q = scale_query(g, q, dh, attn.prefix)
        k_cache, v_cache = self_kv_names(layer)
        # Scores over the cache (masked) and over the new tokens, one softmax over both.
        scores_cache = g.op("Add", [g.op("MatMul", [q, k_cache], attn.prefix), mask4], attn.prefix)
        scores_new = g.op("MatMul", [q, k_new], attn.prefix)
        if causal is not None:
            scores_new = g.op("Add", [scores_new, causal], f"{attn.prefix}/causal")
        scores = g.op("Concat", [scores_cache, scores_new], attn.prefix, axis=-1)
        probs = g.op("Softmax", [scores], attn.prefix, axis=-1)
        p_cache, p_new = g.op("Split", [probs, g.const([ctx, n_tokens])], attn.prefix, n_outputs=2, axis=-1)
        context = g.op(
            "Add",
            [g.op("MatMul", [p_cache, v_cache], attn.prefix), g.op("MatMul", [p_new, v_new], attn.prefix)],
            attn.prefix,
        )
        out = linear(g, merge_heads(g, context, (batch, n_tokens, d), attn.prefix), attn.sub("linear_1"))
        x = g.op("Add", [x, out], attn.prefix)
        x, cross_scores = _cross_attention(g, x, lw.sub("attention"), layer, dims, batch, n_tokens)
        wanted = [head for at, head in alignment_heads or [] if at == layer]
        if wanted:
            picked.append(g.op("Gather", [cross_scores, g.const(wanted)], f"alignment/layer_{layer}", axis=1))
        x = mlp_block(g, x, lw.sub("ffn"))
        new_k, new_v = new_kv_names(layer)
        g.output(k_new, new_k, np.float32, [batch, h, dh, n_tokens])
        g.output(v_new, new_v, np.float32, [batch, h, n_tokens, dh])
    if last is not None:
        x = g.op("Gather", [x, last], "decoder/prefill", axis=1)  # [1, 1, D]
    if not alignment_heads:
        logits = _logits(g, x, w, embedding, batch, dims)
        g.output(logits, "logits", np.float32, [batch, dims.n_vocab])
    if picked:
        stacked = g.op("Concat", picked, "alignment", axis=1) if len(picked) > 1 else picked[0]
        scores = g.op("Squeeze", [stacked, g.const([0])], "alignment")
        g.output(scores, "alignment_scores", np.float32, [len(alignment_heads or []), n_tokens, dims.n_audio_ctx])
    return g.model()


def build_decoder_full(weights: dict[str, np.ndarray], dims: ModelDims, n_tokens: int) -> onnx.ModelProto:
    """No-cache reference: logits for every position of a ``n_tokens`` prefix (batch 1)."""
    g = GraphBuilder(f"whisper_decoder_full_t{n_tokens}")
    w = Weights(weights, "decoder")
    d, h = dims.n_text_state, dims.n_text_head
    dh = d // h
    tokens = g.input("tokens", np.int64, [1, n_tokens])
    _add_cross_inputs(g, dims)
    x, embedding = _embed(g, w, tokens, g.const(list(range(n_tokens))))
    causal = np.triu(np.full((n_tokens, n_tokens), MASKED_SCORE, np.float32), k=1)
    causal_mask = g.weight("decoder/causal_mask", causal)
    for layer in range(dims.n_text_layer):
        lw = w.sub(f"layer_{layer}")
        attn = lw.sub("self_attention")
        normed = layer_norm(g, x, attn.sub("layer_norm"))
        fused = attn.sub("linear_0")
        shape = (1, n_tokens, h, dh)
        q = split_heads(g, linear(g, normed, fused, slice(0, d)), shape, False, attn.prefix)
        k = split_heads(g, linear(g, normed, fused, slice(d, 2 * d)), shape, True, attn.prefix)
        v = split_heads(g, linear(g, normed, fused, slice(2 * d, 3 * d)), shape, False, attn.prefix)
        context = attend(g, scale_query(g, q, dh, attn.prefix), k, v, causal_mask, attn.prefix)
        out = linear(g, merge_heads(g, context, (1, n_tokens, d), attn.prefix), attn.sub("linear_1"))
        x = g.op("Add", [x, out], attn.prefix)
        x, _ = _cross_attention(g, x, lw.sub("attention"), layer, dims, 1, n_tokens)
        x = mlp_block(g, x, lw.sub("ffn"))
    logits = _logits(g, x, w, embedding, n_tokens, dims)
    g.output(logits, "logits", np.float32, [n_tokens, dims.n_vocab])
    return g.model()
