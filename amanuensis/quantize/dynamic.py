"""The CPU flavour: integer MatMuls whose activation scales are measured at run time.

An NPU compiler needs every scale fixed in the graph (static QDQ); the CPU does not. Here each
activation is quantized to 8 bits with the range of the tensor it actually gets (onnxruntime's
``DynamicQuantizeLinear``), weights are int8 per output channel, and the products run in integer
kernels (``MatMulInteger``, fused by onnxruntime into ``DynamicQuantizeMatMul`` where the weight is
a constant). No range is calibrated, so loud, quiet or noisy input cannot fall outside one: on the
gate's noisy conditions this kept INT8 as good as FP32 where calibrated static ranges did not (see
``docs/quantization.md``).

Attention probabilities need one more step: the graph multiplies the *unnormalized* weights
``exp(s - max(s))`` with V and divides each row by its sum afterwards (``quantize.unnormalized``).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from amanuensis.export.cache import publish
from amanuensis.export.graph_index import GraphIndex, replace_nodes
from amanuensis.quantize import kernels
from amanuensis.quantize.per_row import INTEGER_SUFFIX, RESIDUAL_LIMB, apply_techniques, symmetric_int8, unit_rows
from amanuensis.quantize.recipe import QuantRecipe
from amanuensis.quantize.unnormalized import unnormalized_attention

INTEGER_OPS = ("MatMulInteger", "ConvInteger")  # what quantize_dynamic turns a compute node into
GEMM_AS_MATMUL = "_MatMul"  # quantize_dynamic turns a Gemm into a MatMul named so, then quantizes that
# Conv stays float: as ConvInteger (uint8 weights, per tensor) it made INT8 worse on every gate
# condition (docs/quantization.md), and it is under 5 % of an encoder run's MACs.
DYNAMIC_OP_TYPES = ("MatMul", "Gemm")


def build_dynamic(
    float_model: Path,
    output: Path,
    recipe: QuantRecipe,
    exclude: list[str] | None = None,
    only: list[str] | None = None,
    query_chunks: int = 1,
    techniques: dict[str, str] | None = None,
    weight_storage: str | None = None,
) -> None:
    """Integer MatMul/Gemm with run-time activation scales (onnxruntime ``quantize_dynamic``).

    ``exclude`` keeps nodes float, ``only`` quantizes just those (sensitivity analysis);
    ``techniques`` names nodes to quantize with a finer integer form instead (``per_row``).
    ``query_chunks`` splits multi-query attention first (the CPU EP's memory saving, which looks
    for the Softmax this build removes). ``weight_storage``: "int8" or "uint8" (None: what this
    machine's kernels compute exactly, ``kernels.weight_storage``).
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from amanuensis.export.query_chunks import split_attention_queries
    from amanuensis.quantize.qdq import quiet_root_logger

    model = onnx.load(str(float_model))
    # quantize_dynamic turns a Gemm into a MatMul named <Gemm>_MatMul before it checks exclusions
    techniques = {n: t for n, t in (techniques or {}).items() if not only or n in only}
    kept = [*(exclude or []), *techniques]  # quantize_dynamic leaves these alone
    exclude = [name for node in kept for name in (node, f"{node}{GEMM_AS_MATMUL}")]
    if query_chunks > 1:
        model = split_attention_queries(model, query_chunks)
        exclude += [f"{name}/chunk{c}" for name in exclude for c in range(query_chunks)]
    unnormalized_attention(model)
    if not only or TIED_PROJECTION in only:
        share_quantized_embedding(model, exclude)  # before quantize_dynamic, which would copy the table
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=output.parent, prefix=".dynamic-") as tmp:
        source, staged = Path(tmp) / "float.onnx", Path(tmp) / output.name
        onnx.save(model, str(source))
        dynamic_only = [n for n in only or [] if n not in techniques]
        if only and not dynamic_only:  # a technique measured alone: nothing for quantize_dynamic
            shutil.copyfile(source, staged)
        else:
            with quiet_root_logger():
                quantize_dynamic(
                    str(source),
                    str(staged),
                    op_types_to_quantize=list(DYNAMIC_OP_TYPES),
                    per_channel=recipe.per_channel,
                    weight_type=QuantType.QInt8,
                    nodes_to_quantize=dynamic_only,
                    nodes_to_exclude=exclude,
                    extra_options={"MatMulConstBOnly": False},  # attention's activation × activation products
                )
        quantized = onnx.load(str(staged))
        fixed_scale_attention_weights(quantized)
        apply_techniques(quantized, techniques)
        if (weight_storage or kernels.weight_storage()) == kernels.UNSIGNED:
            kernels.store_weights_unsigned(quantized)
        store_exact_float16(quantized)
        onnx.save(quantized, str(staged))
        onnx.checker.check_model(str(staged))
        publish(staged, output)


def fixed_scale_attention_weights(model: onnx.ModelProto) -> int:
    """Quantize each tensor of unnormalized attention weights with the fixed scale 1/255, in place;
    returns how many. ``DynamicQuantizeLinear`` would measure the tensor's range first, but it is
    known: the weights are exp(s − max s), between 0 and exactly 1, so the measured scale is
    always 1/255 with zero point 0. The numbers are the same; one pass over the tensor is saved."""
    graph = model.graph
    index = GraphIndex(graph)
    replaced = {}
    for node in graph.node:
        if node.op_type != "DynamicQuantizeLinear" or not unit_rows(index, node.input[0]):
            continue
        values, scale, zero_point = node.output
        graph.initializer.extend(
            [
                numpy_helper.from_array(np.array(1 / 255, np.float32), scale),
                numpy_helper.from_array(np.array(0, np.uint8), zero_point),
            ]
        )
        replaced[node.name] = [
            helper.make_node("QuantizeLinear", [node.input[0], scale, zero_point], [values], name=node.name)
        ]
    replace_nodes(graph, replaced)
    return len(replaced)


FLOAT16_MIN_ELEMENTS = 4096  # smaller float constants are not worth a Cast node


def store_exact_float16(model: onnx.ModelProto) -> int:
    """Store each large float32 initializer that float16 represents exactly as float16 plus a Cast
    back, in place; returns how many. The weights came from a float16 checkpoint, so the float
    ones that stay (Convs, positional encodings, nodes kept float) take half the bytes and every
    computed number stays the same (onnxruntime folds the constant Cast at load)."""
    graph = model.graph
    stored = 0
    for init in list(graph.initializer):
        if init.data_type != onnx.TensorProto.FLOAT or np.prod(init.dims) < FLOAT16_MIN_ELEMENTS:
            continue
        values = numpy_helper.to_array(init)
        half = values.astype(np.float16)
        if not np.array_equal(half.astype(np.float32), values):
            continue
        name = init.name
        graph.initializer.remove(init)
        graph.initializer.append(numpy_helper.from_array(half, f"{name}/float16"))
        graph.node.insert(
            0,
            helper.make_node("Cast", [f"{name}/float16"], [name], name=f"{name}/to_float32", to=onnx.TensorProto.FLOAT),
        )
        stored += 1
    return stored


TIED_PROJECTION = "decoder/logits/Gemm"  # the vocabulary projection, reading the token embedding transposed
# Never returned to float by the mixed-precision search: a float projection keeps the float table
# (80 MB of tiny.en's 151), which alone breaks the size budget the INT8 graphs must meet.
KEPT_INTEGER = (TIED_PROJECTION,)


def share_quantized_embedding(model: onnx.ModelProto, exclude: list[str]) -> bool:
    """Store Whisper's tied token embedding once, as int8, for both of its readers, in place.

    The table (51864 × 384 for tiny.en, half the decoder's weights) is read by the embedding Gather
    and, transposed, by the logits Gemm, which ``quantize_dynamic`` has no integer form for. Here
    the Gather reads int8 rows and scales them, and the projection becomes an integer product with
    the transposed int8 table (onnxruntime folds the constant Transpose once, at load), so the file
    holds one int8 table instead of a float one. Symmetric, one scale per token: the projection's
    output channel and the Gather's row alike (one scale for the whole table measured +1.10 WER
    points on clean speech against +0.16 for per-channel). Returns whether the graph had such a
    pair (and the projection was not excluded).
    """
    graph = model.graph
    index = GraphIndex(graph)
    gemm = next((n for n in graph.node if n.name == TIED_PROJECTION and n.op_type == "Gemm"), None)
    if gemm is None or gemm.name in exclude or len(gemm.input) != 2:
        return False
    attributes = {a.name: helper.get_attribute_value(a) for a in gemm.attribute}
    table_name = gemm.input[1]
    table = index.initializers.get(table_name)
    gathers = [n for n in index.users(table_name) if n.op_type == "Gather" and n.input[0] == table_name]
    if table is None or attributes.get("transB") != 1 or attributes.get("transA", 0) or not gathers:
        return False
    if attributes.get("alpha", 1.0) != 1.0 or len(index.users(table_name)) != len(gathers) + 1:
        return False
    levels, scales = symmetric_int8(numpy_helper.to_array(table), axis=0)  # one per token: per output channel
    name = f"{table_name}_int8"
    graph.initializer.remove(table)
    graph.initializer.extend(
        [
            numpy_helper.from_array(levels, name),
            numpy_helper.from_array(scales, f"{name}_scales"),
            numpy_helper.from_array(np.array(0, np.int8), f"{name}_zero_point"),
            numpy_helper.from_array(np.array([-1], np.int64), f"{name}_last_axis"),
        ]
    )
    scope, x = gemm.name, gemm.input[0]
    replaced: dict[str, list[onnx.NodeProto]] = {}
    for gather in gathers:  # rows as int8, each times its own scale
        out, rows = gather.output[0], f"{gather.output[0]}/int8"
        gather.input[0], gather.output[0] = name, rows
        row_scales = helper.make_node(
            "Gather", [f"{name}_scales", gather.input[1]], [f"{rows}_scales"], name=f"{gather.name}/scales"
        )
        replaced[gather.name] = [
            gather,
            row_scales,
            helper.make_node(
                "Unsqueeze",
                [f"{rows}_scales", f"{name}_last_axis"],
                [f"{rows}_scales_column"],
                name=f"{gather.name}/unsqueeze",
            ),
            helper.make_node("Cast", [rows], [f"{rows}_float"], name=f"{gather.name}/cast", to=onnx.TensorProto.FLOAT),
            helper.make_node(  # the table's zero point: 0, or 128 once its levels are stored as uint8
                "Cast", [f"{name}_zero_point"], [f"{rows}_zero"], name=f"{gather.name}/zero", to=onnx.TensorProto.FLOAT
            ),
            helper.make_node(
                "Sub", [f"{rows}_float", f"{rows}_zero"], [f"{rows}_levels"], name=f"{gather.name}/center"
            ),
            helper.make_node(
                "Mul", [f"{rows}_levels", f"{rows}_scales_column"], [out], name=f"{gather.name}/dequantize"
            ),
        ]
    replaced[gemm.name] = [
        helper.make_node(
            "DynamicQuantizeLinear",
            [x],
            [f"{x}_q", f"{x}_q_scale", f"{x}_q_zero_point"],
            name=f"{scope}/quantize_input",
        ),
        helper.make_node("Transpose", [name], [f"{name}_transposed"], name=f"{scope}/transpose_table", perm=[1, 0]),
        helper.make_node(
            "MatMulInteger",
            [f"{x}_q", f"{name}_transposed", f"{x}_q_zero_point", f"{name}_zero_point"],
            [f"{scope}/accumulated"],
            name=f"{scope}{INTEGER_SUFFIX}",
        ),
        helper.make_node(
            "Cast",
            [f"{scope}/accumulated"],
            [f"{scope}/accumulated_float"],
            name=f"{scope}/cast",
            to=onnx.TensorProto.FLOAT,
        ),
        helper.make_node("Mul", [f"{x}_q_scale", f"{name}_scales"], [f"{scope}/scales"], name=f"{scope}/scales"),
        helper.make_node(
            "Mul", [f"{scope}/accumulated_float", f"{scope}/scales"], [gemm.output[0]], name=f"{scope}/rescale"
        ),
    ]
    replace_nodes(graph, replaced)
    return True


def dynamic_integer_nodes(model: onnx.ModelProto) -> set[str]:
    """Exported compute nodes that run as integer kernels with both inputs quantized: each is a
    MatMulInteger/ConvInteger whose two operands come from a DynamicQuantizeLinear or are integer
    initializers (possibly transposed)."""
    index = GraphIndex(model.graph)
    integer_types = {onnx.TensorProto.INT8, onnx.TensorProto.UINT8}

    def quantized(name: str) -> bool:
        init = index.initializers.get(name)
        if init is not None:
            return init.data_type in integer_types
        node = index.producer.get(name)
        if node is not None and node.op_type == "Transpose":  # a stored integer table, read transposed
            return quantized(node.input[0])
        # quantized at run time: by onnxruntime's DynamicQuantizeLinear or per row (per_row)
        run_time = ("DynamicQuantizeLinear", "QuantizeLinear")
        return node is not None and node.op_type in run_time and node.output[0] == name

    names = set()
    for node in model.graph.node:
        if node.op_type in INTEGER_OPS and all(quantized(i) for i in node.input[:2]):
            name = node.name.removesuffix(INTEGER_SUFFIX).removesuffix(RESIDUAL_LIMB).removesuffix(GEMM_AS_MATMUL)
            name = name.split("/chunk")[0]
            names.add(name)
    return names
