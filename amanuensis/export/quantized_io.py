"""INT8 graphs that pass keys and values to each other already quantized.

A QDQ decoder step starts by quantizing its inputs: the encoder's cross-attention keys and values
(4.6 M numbers for tiny.en) and the whole 448-slot self-attention cache, at every token, although
the cross K/V stay the same for a whole window and each cache slot is written once. These
rewrites move each of those QuantizeLinear nodes to where its values are made: the encoder's
outputs (with the decoder's scale and zero point) and the decoder step's new-K/V outputs (with
the cache input's), so the runtime keeps the cache in 8 bits and every number the decoder
computes stays the same. Inputs without a QuantizeLinear of their own (a layer kept in float)
stay float.

They work on finished graphs, as the query-chunk rewrite does, so calibration, range tables and
the WER gate see the graphs as exported. Parameters travel as plain dicts ({"scale",
"zero_point", "dtype"}) so that the runtime can read them without ``onnx``.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from amanuensis.export.graph_index import GraphIndex
from amanuensis.export.io_names import cross_kv_names, new_kv_names, run_time_names, self_kv_names

# {"scale": float, "zero_point": int, "dtype": "uint8" | "int8"}; a run-time quantizer's:
# {"run_time": True, "dtype": "uint8"}, its scale and zero point travelling as RUN_TIME_SUFFIXES tensors
QuantParams = dict[str, float | int | str | bool]


def fold_input_quantizers(model: onnx.ModelProto, names: list[str], run_time: bool = False) -> dict[str, QuantParams]:
    """Retype each named input that only feeds one per-tensor QuantizeLinear to that node's output
    type and drop the node, in place. Returns the dropped nodes' parameters by input name.

    ``run_time``: also fold a ``DynamicQuantizeLinear`` (the CPU flavour's), whose scale and zero
    point then become inputs of their own (``run_time_names``). Only for inputs that stay the same
    over a window (cross K/V): a cache that grows needs its range measured again at every step."""
    graph = model.graph
    index = GraphIndex(graph)
    inputs = {i.name: i for i in graph.input}
    folded: dict[str, QuantParams] = {}
    for name in names:
        quantize = index.single_consumer(name)
        if run_time and quantize is not None and quantize.op_type == "DynamicQuantizeLinear":
            _fold_run_time(graph, index, quantize, inputs[name])
            folded[name] = {"run_time": True, "dtype": "uint8"}
            continue
        if quantize is None or quantize.op_type != "QuantizeLinear" or len(quantize.input) != 3:
            continue
        scale, zero_point = (index.scalar(n) for n in quantize.input[1:])
        if scale is None or zero_point is None:
            continue  # per-axis parameters: not a drop-in uint8 tensor
        for node in index.users(quantize.output[0]):
            node.input[:] = [name if i == quantize.output[0] else i for i in node.input]
        graph.node.remove(quantize)
        inputs[name].type.tensor_type.elem_type = helper.np_dtype_to_tensor_dtype(zero_point.dtype)
        folded[name] = {"scale": float(scale), "zero_point": int(zero_point), "dtype": zero_point.dtype.name}
    return folded


def _fold_run_time(graph: onnx.GraphProto, index: GraphIndex, quantize: onnx.NodeProto, source) -> None:
    """Drop one DynamicQuantizeLinear: its three outputs become graph inputs (uint8 values, scale,
    zero point) under the input's name and ``run_time_names``."""
    replacements = dict(zip(quantize.output, (source.name, *run_time_names(source.name)), strict=True))
    for node in graph.node:
        node.input[:] = [replacements.get(i, i) for i in node.input]
    graph.node.remove(quantize)
    source.type.tensor_type.elem_type = onnx.TensorProto.UINT8
    graph.input.extend(_run_time_infos(source.name))


def _run_time_infos(name: str) -> list[onnx.ValueInfoProto]:
    """Scalar float scale and uint8 zero point that travel with ``name`` (``run_time_names``)."""
    scale, zero_point = run_time_names(name)
    return [
        helper.make_tensor_value_info(scale, onnx.TensorProto.FLOAT, []),
        helper.make_tensor_value_info(zero_point, onnx.TensorProto.UINT8, []),
    ]


def quantize_outputs(model: onnx.ModelProto, params: dict[str, QuantParams]) -> None:
    """End each named graph output with a QuantizeLinear of the given parameters (or, for a
    run-time one, a DynamicQuantizeLinear whose scale and zero point are outputs too), in place."""
    graph = model.graph
    outputs = {o.name: o for o in graph.output}
    for name, p in params.items():
        float_name = f"{name}/float"
        for node in graph.node:
            node.output[:] = [float_name if o == name else o for o in node.output]
        if p.get("run_time"):
            scale, zero_point = run_time_names(name)
            quantize = helper.make_node(
                "DynamicQuantizeLinear", [float_name], [name, scale, zero_point], name=f"{name}/quantize"
            )
            graph.node.append(quantize)
            graph.output.extend(_run_time_infos(name))
            outputs[name].type.tensor_type.elem_type = onnx.TensorProto.UINT8
            continue
        dtype = np.dtype(str(p["dtype"]))
        graph.initializer.extend(
            [
                numpy_helper.from_array(np.array(p["scale"], np.float32), f"{name}/scale"),
                numpy_helper.from_array(np.array(p["zero_point"], dtype), f"{name}/zero_point"),
            ]
        )
        graph.node.append(
            helper.make_node(
                "QuantizeLinear", [float_name, f"{name}/scale", f"{name}/zero_point"], [name], name=f"{name}/quantize"
            )
        )
        outputs[name].type.tensor_type.elem_type = helper.np_dtype_to_tensor_dtype(dtype)


def decoder_with_quantized_io(model: onnx.ModelProto, n_layers: int) -> dict[str, QuantParams]:
    """Fold the decoder step's cache and cross K/V quantizers, in place; each folded cache input's
    new-K/V output is quantized with its parameters. Returns the folded inputs' parameters."""
    caches = [n for layer in range(n_layers) for n in self_kv_names(layer)]
    folded = fold_input_quantizers(model, caches)
    folded |= fold_input_quantizers(model, [n for layer in range(n_layers) for n in cross_kv_names(layer)], True)
    new_outputs = {}
    for layer in range(n_layers):
        for cache, new in zip(self_kv_names(layer), new_kv_names(layer), strict=True):
            if cache in folded:
                new_outputs[new] = folded[cache]
    quantize_outputs(model, new_outputs)
    return folded


def encoder_with_quantized_outputs(model: onnx.ModelProto, params: dict[str, QuantParams]) -> None:
    """Quantize the encoder's cross K/V outputs that a rewritten decoder takes in 8 bits, in place."""
    produced = {o.name for o in model.graph.output}
    quantize_outputs(model, {name: p for name, p in params.items() if name in produced})
