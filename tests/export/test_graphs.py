"""Exported graphs are static: the form NPU compilers accept."""

from __future__ import annotations

import onnx

from amanuensis import export
from amanuensis.engine import WhisperModel
from amanuensis.export import GraphKind


def _static_dims(value_infos) -> list[list[int | str]]:
    return [
        [d.dim_value if d.HasField("dim_value") else d.dim_param for d in v.type.tensor_type.shape.dim]
        for v in value_infos
    ]


def test_graphs_have_only_static_shapes(tiny: WhisperModel) -> None:
    encoder = onnx.load(export.graph_path(tiny.checkpoint, GraphKind.ENCODER), load_external_data=False)
    decoder = onnx.load(export.graph_path(tiny.checkpoint, GraphKind.DECODER, 1), load_external_data=False)
    for graph in (encoder.graph, decoder.graph):
        for dims in _static_dims([*graph.input, *graph.output]):
            assert dims and all(isinstance(d, int) and d > 0 for d in dims), dims
    assert _static_dims(encoder.graph.input) == [[1, 80, 3000]]
    inputs = {v.name: dims for v, dims in zip(decoder.graph.input, _static_dims(decoder.graph.input), strict=True)}
    assert inputs["tokens"] == [1, 1] and inputs["offset"] == [1] and inputs["mask"] == [1, 448]
    assert inputs["self_k_0"] == [1, 6, 64, 448] and inputs["self_v_0"] == [1, 6, 448, 64]
    outputs = dict(zip([v.name for v in decoder.graph.output], _static_dims(decoder.graph.output), strict=True))
    assert outputs["new_k_0"] == [1, 6, 64, 1]  # only the new token's key leaves the graph
    assert outputs["logits"] == [1, 51864]
