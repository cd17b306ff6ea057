"""QDQ graphs from a float graph and a range table, through onnxruntime's ``quantize_static``.

Apart from ``recipe`` so that running a cached INT8 model does not import onnxruntime's
quantization tooling (and ``onnx``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.calibrate import TensorData, TensorsData, save_tensors_data

from amanuensis.quantize.recipe import QuantRecipe, Ranges
from amanuensis.quantize.targets import get_target, prepare_float_model

CALIBRATION_METHODS = {
    "minmax": CalibrationMethod.MinMax,
    "entropy": CalibrationMethod.Entropy,
    "percentile": CalibrationMethod.Percentile,
}


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """quantize_static logs an advisory on the root logger for every call; keep the console readable."""
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
    (sensitivity analysis). For the CPU target Softmax, LayerNorm, GELU, residual Adds and the
    attention mask stay float (only the target's op types get QDQ inputs); NPU targets
    quantize the whole graph (see ``targets``).
    """
    tensors = TensorsData(
        CalibrationMethod.MinMax,
        {k: TensorData(lowest=np.float32(lo), highest=np.float32(hi)) for k, (lo, hi) in ranges.items()},
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=output.parent, prefix=".qdq-") as tmp:
        cache = Path(tmp) / "ranges.json"
        save_tensors_data(tensors, cache)
        staged = Path(tmp) / output.name
        source = prepare_float_model(float_model, get_target(recipe.target), Path(tmp))
        settings = _quantize_settings(source, recipe, exclude or [])
        with _quiet_root_logger():
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
        onnx.checker.check_model(str(staged))
        os.replace(staged, output)


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
            per_channel=recipe.per_channel,
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
