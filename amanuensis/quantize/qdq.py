"""QDQ graphs from a float graph and a range table, through onnxruntime's ``quantize_static``.

Apart from ``recipe`` so that running a cached INT8 model does not import onnxruntime's
quantization tooling (and ``onnx``).
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper
from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.calibrate import TensorData, TensorsData, save_tensors_data

from amanuensis.export.cache import publish
from amanuensis.export.graph_index import GraphIndex, drop_unread_initializers
from amanuensis.quantize.recipe import QuantRecipe, Ranges
from amanuensis.quantize.targets import get_target, prepare_float_model, source_node_name
from amanuensis.quantize.unnormalized import UNNORMALIZED_SUFFIX, attention_weight_ranges
from amanuensis.quantize.weights import (
    give_wide_weights_an_8bit_copy,
    per_channel_weight_nodes,
    store_weights_per_channel,
)

SCORE_PATH_OPS = ("Add", "Mul", "Concat", "QuantizeLinear", "DequantizeLinear")  # between scores and softmax
QUANTIZED_SUFFIX = "_quantized"  # onnxruntime's quantizer names a quantized initializer <float name> + this
CALIBRATION_METHODS = {
    "minmax": CalibrationMethod.MinMax,
    "entropy": CalibrationMethod.Entropy,
    "percentile": CalibrationMethod.Percentile,
    "minmse": CalibrationMethod.Entropy,  # only its histogram collection is used (quantize.mse)
}


@contextlib.contextmanager
def quiet_root_logger() -> Iterator[None]:
    """onnxruntime's quantizers log an advisory on the root logger for every call; keep the console readable."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def build_qdq(
    float_model: Path,
    output: Path,
    recipe: QuantRecipe,
    ranges: Ranges,
    exclude: list[str] | None = None,
    only: list[str] | None = None,
) -> None:
    """Insert QuantizeLinear/DequantizeLinear pairs using precomputed ranges (no calibration run).

    Goes through onnxruntime's ``quantize_static`` with its calibration cache, so the QDQ placement
    rules are onnxruntime's own. ``exclude`` keeps nodes float; ``only`` quantizes just those
    (sensitivity analysis). With ``recipe.per_channel`` the whole-graph flavour stores its weights
    per channel itself (``weights``). For the CPU target Softmax, LayerNorm, GELU, residual Adds and the
    attention mask stay float (only the target's op types get QDQ inputs); NPU targets
    quantize the whole graph (see ``targets``).
    """
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=output.parent, prefix=".qdq-") as tmp:
        staged = Path(tmp) / output.name
        target = get_target(recipe.target)
        source = prepare_float_model(float_model, target, Path(tmp))
        if target.unnormalized_attention:
            graph = onnx.load(str(source), load_external_data=False).graph
            ranges = {**ranges, **attention_weight_ranges(graph)}
        cache = Path(tmp) / "ranges.json"
        tensors = {k: TensorData(lowest=np.float32(lo), highest=np.float32(hi)) for k, (lo, hi) in ranges.items()}
        save_tensors_data(TensorsData(CalibrationMethod.MinMax, tensors), cache)
        if source != float_model:  # preparation may have fused nodes: name them as they are now
            renamed = _prepared_names(source)
            exclude = [renamed.get(name, name) for name in exclude or []]
            only = [renamed.get(name, name) for name in only or []]
        settings = _quantize_settings(source, recipe, exclude or [])
        with quiet_root_logger():
            quantize_static(
                str(source),
                str(staged),
                calibration_data_reader=None,
                calibration_cache_path=str(cache),
                quant_format=QuantFormat.QDQ,
                nodes_to_quantize=list(only or []),
                calibrate_method=CalibrationMethod.MinMax,
                **settings,
            )
        if target.float_scores or target.unnormalized_attention:
            model = onnx.load(str(staged))
            if target.float_scores:
                keep_scores_float(model)
            if target.unnormalized_attention:
                keep_unnormalized_context_float(model)
            onnx.save(model, str(staged))
        if recipe.quantized_op_types is None:  # whole-graph (QNN) flavour
            model = onnx.load(str(staged))
            floats = {init.name: numpy_helper.to_array(init) for init in onnx.load(str(source)).graph.initializer}
            floats = {f"{name}{QUANTIZED_SUFFIX}": v for name, v in floats.items()}
            give_wide_weights_an_8bit_copy(model, floats)
            if recipe.per_channel:
                chosen = {n.name for n in per_channel_weight_nodes(model, target)}
                store_weights_per_channel(model, floats, lambda node, _stored: node.name in chosen)
            onnx.save(model, str(staged))
        if recipe.power_of_two_scales:
            model = onnx.load(str(staged))
            floats = {init.name: numpy_helper.to_array(init) for init in onnx.load(str(source)).graph.initializer}
            round_scales_to_powers_of_two(model, {f"{name}{QUANTIZED_SUFFIX}": v for name, v in floats.items()})
            onnx.save(model, str(staged))
        onnx.checker.check_model(str(staged))
        publish(staged, output)


def _prepared_names(model_path: Path) -> dict[str, str]:
    """Exported node name → its name in a prepared (possibly fused) graph."""
    return {source_node_name(n.name): n.name for n in onnx.load(str(model_path), load_external_data=False).graph.node}


def keep_scores_float(model: onnx.ModelProto) -> None:
    """Drop the Q/DQ pair after each MatMul of two quantized activations (attention's query × key),
    in place, so the scores reach the softmax in float.

    Requantizing a score matrix to 8 bits costs accuracy and time: a DequantizeLinear of every
    score before the float softmax (about 10% of a tiny.en encoder run on the CPU EP).
    """
    graph = model.graph
    index = GraphIndex(graph)

    def dequantized_activation(name: str) -> bool:
        node = index.producer.get(name)
        return node is not None and node.op_type == "DequantizeLinear" and node.input[0] not in index.initializers

    def reaches_softmax(name: str, hops: int = 4) -> bool:
        """Whether ``name`` only flows into a Softmax, through at most ``hops`` elementwise steps
        (the mask Add, a Concat of score blocks, their Q/DQ): scores, not an attention context."""
        users = index.users(name)
        return bool(users) and all(
            user.op_type == "Softmax"
            or (hops > 0 and user.op_type in SCORE_PATH_OPS and reaches_softmax(user.output[0], hops - 1))
            for user in users
        )

    for matmul in [n for n in graph.node if n.op_type == "MatMul"]:
        if all(dequantized_activation(name) for name in matmul.input) and reaches_softmax(matmul.output[0]):
            _drop_output_qdq(graph, index, matmul)
    drop_unread_initializers(graph)


def keep_unnormalized_context_float(model: onnx.ModelProto) -> None:
    """Drop the Q/DQ pair after each product of unnormalized attention weights with V
    (quantize.unnormalized), in place, so it is divided by its row sums in float. Its rows are
    sums of up to 1500 weighted values, as large as the attention is diffuse: one 8-bit scale over
    them measured worse than the normalized softmax it replaces."""
    graph = model.graph
    index = GraphIndex(graph)
    for matmul in [n for n in graph.node if n.op_type == "MatMul" and n.output[0].endswith(UNNORMALIZED_SUFFIX)]:
        _drop_output_qdq(graph, index, matmul)
    drop_unread_initializers(graph)


def _drop_output_qdq(graph: onnx.GraphProto, index: GraphIndex, node: onnx.NodeProto) -> None:
    """Let the readers of ``node``'s quantized output read it in float; the Q/DQ nodes go."""
    quantize = index.single_consumer(node.output[0])
    if quantize is None or quantize.op_type != "QuantizeLinear":
        return
    dequantizers = index.users(quantize.output[0])
    if not dequantizers or any(d.op_type != "DequantizeLinear" for d in dequantizers):
        return
    for dequantize in dequantizers:
        for reader in index.users(dequantize.output[0]):
            reader.input[:] = [node.output[0] if i == dequantize.output[0] else i for i in reader.input]
        graph.node.remove(dequantize)
    graph.node.remove(quantize)


def round_scales_to_powers_of_two(model: onnx.ModelProto, float_values: dict[str, np.ndarray] | None = None) -> None:
    """Round every Q/DQ scale up to a power of two, in place; constants are quantized anew.

    Rounding up never narrows a range, so nothing that fitted before clips now; it costs at most
    one bit of resolution. Quantized constants (weights, biases) are quantized again with the new
    scale from ``float_values`` (quantized initializer name → the float tensor it came from), or
    where a constant is not there, from its dequantized value (rounding twice: up to a step off).
    """
    initializers = {init.name: init for init in model.graph.initializer}
    qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    constants: dict[str, tuple[np.ndarray, onnx.NodeProto]] = {}  # quantized constant → its float values
    for node in qdq:
        name = node.input[0]
        if node.op_type == "DequantizeLinear" and name in initializers and name not in constants:
            original = (float_values or {}).get(name)
            usable = original is not None and original.shape == tuple(initializers[name].dims)
            constants[name] = (original.astype(np.float64) if usable else _dequantize(node, initializers), node)
    for name in {n.input[1] for n in qdq}:
        scale = numpy_helper.to_array(initializers[name])
        rounded = np.exp2(np.ceil(np.log2(scale.astype(np.float64)))).astype(scale.dtype)
        initializers[name].CopyFrom(numpy_helper.from_array(rounded, name))
    _tie_bias_scales(model, initializers)
    for name, (values, node) in constants.items():
        quantized = numpy_helper.to_array(initializers[name])
        scale, zero_point = _scale_and_zero_point(node, initializers, quantized.ndim)
        info = np.iinfo(quantized.dtype)
        requantized = np.clip(np.round(values / scale) + zero_point, info.min, info.max).astype(quantized.dtype)
        initializers[name].CopyFrom(numpy_helper.from_array(requantized, name))


def _tie_bias_scales(model: onnx.ModelProto, initializers: dict[str, onnx.TensorProto]) -> None:
    """An int32 bias must keep scale = input scale × weight scale: fused kernels (QLinearConv,
    an NPU's MAC array) add it to the accumulator as it is. Rounding each scale on its own can
    break that, so the bias scale is set to the product of the two rounded ones."""
    dequantized_by = {n.output[0]: n for n in model.graph.node if n.op_type == "DequantizeLinear"}
    for node in model.graph.node:
        if len(node.input) < 3 or node.input[2] not in dequantized_by:
            continue
        bias, data, weight = (dequantized_by.get(node.input[i]) for i in (2, 0, 1))
        if data is None or weight is None or initializers[bias.input[0]].data_type != onnx.TensorProto.INT32:
            continue
        data_scale, weight_scale = (numpy_helper.to_array(initializers[n.input[1]]) for n in (data, weight))
        tied = (data_scale * weight_scale).astype(np.float32)
        initializers[bias.input[1]].CopyFrom(numpy_helper.from_array(tied, bias.input[1]))


def _scale_and_zero_point(
    node: onnx.NodeProto, initializers: dict[str, onnx.TensorProto], rank: int
) -> tuple[np.ndarray, np.ndarray]:
    """A DequantizeLinear's scale and zero point, shaped to broadcast over its input (per-axis too)."""
    scale = numpy_helper.to_array(initializers[node.input[1]]).astype(np.float64)
    zero_point = (
        numpy_helper.to_array(initializers[node.input[2]]).astype(np.float64) if len(node.input) > 2 else np.zeros(1)
    )
    if scale.ndim == 1 and scale.size > 1:
        axis = next((onnx.helper.get_attribute_value(a) for a in node.attribute if a.name == "axis"), 1) % rank
        shape = [1] * rank
        shape[axis] = scale.size
        scale, zero_point = scale.reshape(shape), zero_point.reshape(shape)
    return scale, zero_point


def _dequantize(node: onnx.NodeProto, initializers: dict[str, onnx.TensorProto]) -> np.ndarray:
    quantized = numpy_helper.to_array(initializers[node.input[0]])
    scale, zero_point = _scale_and_zero_point(node, initializers, quantized.ndim)
    return (quantized.astype(np.float64) - zero_point) * scale


def _quantize_settings(source: Path, recipe: QuantRecipe, exclude: list[str]) -> dict:
    """quantize_static arguments for the recipe's target."""
    if recipe.quantized_op_types is None:
        # onnxruntime's own QNN rules: which ops need shared scales, 16-bit Q/DQ from the contrib
        # domain below opset 21, and so on. Its calibration reader is unused (ranges are cached).
        from onnxruntime.quantization.execution_providers.qnn import get_qnn_qdq_config

        config = get_qnn_qdq_config(
            str(source),
            calibration_data_reader=None,
            activation_type=recipe.activation_type,
            # uint8 weights, onnxruntime's QNN default: with int8 symmetric ones the HTP refused the
            # LayerNorms (their quantized gamma/beta), as the placement report showed.
            weight_type=QuantType.QUInt8,
            # Per-channel weights are stored after quantizing (weights.per_channel_weight_nodes),
            # for the products the HTP computes faithfully that way.
            per_channel=False,
            activation_symmetric=recipe.activation_symmetric,
            nodes_to_exclude=exclude,
        )
        return {
            "op_types_to_quantize": config.op_types_to_quantize,
            "per_channel": config.per_channel,
            "activation_type": config.activation_type,
            "weight_type": config.weight_type,
            "nodes_to_exclude": config.nodes_to_exclude or [],
            "extra_options": config.extra_options,
        }
    op_types = recipe.quantized_op_types
    if recipe.per_channel:
        # onnxruntime gives a Gather's output its table's quantization parameters, which per channel
        # are per-axis: an invalid graph. The tied embedding still gets per-channel int8 weights
        # through the logits Gemm; the Gather then reads their DequantizeLinear output.
        op_types = [op for op in op_types if op != "Gather"]
    return {
        "op_types_to_quantize": op_types,
        "per_channel": recipe.per_channel,
        "activation_type": recipe.activation_type,
        "weight_type": QuantType.QInt8,
        "nodes_to_exclude": exclude,
        "extra_options": {
            "ActivationSymmetric": recipe.activation_symmetric,
            "WeightSymmetric": True,
            "MatMulConstBOnly": False,  # attention's activation×activation MatMuls count too
        },
    }
