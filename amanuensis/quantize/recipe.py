"""What an INT8 build is made of: the recipe, the calibrated range table, and the QDQ build.

The range table is the expensive part (it needs the FP32 pipeline run over the calibration audio),
so it is computed once by ``amanuensis quantize`` and committed; building the QDQ graphs from it
takes seconds, which is what a fresh install does.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.calibrate import TensorData, TensorsData, save_tensors_data

from amanuensis.quantize.targets import get_target, prepare_float_model

TABLE_FORMAT = 1  # bump when the table layout changes
METHODS = {
    "minmax": CalibrationMethod.MinMax,
    "entropy": CalibrationMethod.Entropy,
    "percentile": CalibrationMethod.Percentile,
}
COMPUTE_OP_TYPES = ("MatMul", "Conv", "Gemm")


@dataclass(frozen=True)
class QuantRecipe:
    """How ranges are calibrated and tensors quantized. Defaults: per-tensor, as the design says."""

    method: str = "minmax"  # calibration: "minmax" | "entropy" | "percentile"
    per_channel: bool = False  # weights per output channel instead of one scale per tensor
    activation_bits: int = 8  # 8 or 16 (16-bit activations: the QNN-style accuracy fallback)
    activation_symmetric: bool = False  # zero point fixed at the middle (signed activations)
    percentile: float = 99.999  # only for method="percentile": share of |values| kept in range
    target: str = "cpu"  # QDQ flavour: which ops get QDQ and how the graph is prepared (targets.TARGETS)

    def __post_init__(self) -> None:
        get_target(self.target)
        if self.method not in METHODS:
            raise ValueError(f"unknown calibration method {self.method!r}; choose from {', '.join(METHODS)}")
        if self.activation_bits not in (8, 16):
            raise ValueError("activation width must be 8 or 16 bits")

    @property
    def activation_type(self) -> QuantType:
        if self.activation_bits == 8:
            return QuantType.QInt8 if self.activation_symmetric else QuantType.QUInt8
        return QuantType.QInt16 if self.activation_symmetric else QuantType.QUInt16

    def calibrator_options(self) -> dict:
        """Options for onnxruntime's ``create_calibrator``."""
        if self.method == "minmax":
            # Not max_intermediate_outputs: onnxruntime drops (not folds) the runs when it is hit.
            # Memory is bounded by feeding the calibrator in chunks instead (calibration.CHUNK_RUNS).
            return {}
        if self.method == "percentile":
            return {"percentile": self.percentile, "num_bins": 2048}
        return {"num_bins": 512, "num_quantized_bins": 128}

    def describe(self) -> str:
        sym = "symmetric" if self.activation_symmetric else "asymmetric"
        weights = "per-channel" if self.per_channel else "per-tensor"
        text = f"{self.method}, {weights} int8 weights (symmetric), {sym} {self.activation_bits}-bit activations"
        return text if self.target == "cpu" else f"{text}, target {self.target}"

    @property
    def quantized_op_types(self) -> list[str] | None:
        """Op types that get QDQ inputs (None: every op, as NPU compilers want)."""
        op_types = get_target(self.target).quantized_op_types
        return list(op_types) if op_types else None


Ranges = dict[str, tuple[float, float]]  # tensor name → (lowest, highest) seen in calibration


@dataclass
class RangeTable:
    """Calibrated activation ranges for one checkpoint and recipe, plus what produced them."""

    model: str  # model name, e.g. tiny.en
    weights_digest: str  # WhisperCheckpoint.digest the graphs were exported from
    export_version: int  # amanuensis.export.EXPORT_VERSION of those graphs
    recipe: QuantRecipe
    calibration: list[dict]  # one {"path", "sha256", "seconds"} per calibration clip
    ranges: dict[str, Ranges]  # graph ("encoder" | "decoder") → tensor ranges
    excluded_nodes: dict[str, list[str]] = field(default_factory=dict)  # graph → nodes kept in float

    def fingerprint(self) -> str:
        """Short hash naming the cache folder of graphs built from this table."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    def to_dict(self) -> dict:
        return {
            "format": TABLE_FORMAT,
            "model": self.model,
            "weights_digest": self.weights_digest,
            "export_version": self.export_version,
            "recipe": asdict(self.recipe),
            "calibration": self.calibration,
            "excluded_nodes": self.excluded_nodes,
            "ranges": {g: {k: [float(lo), float(hi)] for k, (lo, hi) in r.items()} for g, r in self.ranges.items()},
        }

    @classmethod
    def from_dict(cls, data: dict) -> RangeTable:
        if data.get("format") != TABLE_FORMAT:
            raise ValueError(f"range table format {data.get('format')} is not {TABLE_FORMAT}")
        return cls(
            model=data["model"],
            weights_digest=data["weights_digest"],
            export_version=data["export_version"],
            recipe=QuantRecipe(**data["recipe"]),
            calibration=data["calibration"],
            ranges={g: {k: (lo, hi) for k, (lo, hi) in r.items()} for g, r in data["ranges"].items()},
            excluded_nodes=data.get("excluded_nodes", {}),
        )

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: Path) -> RangeTable:
        return cls.from_dict(json.loads(path.read_text()))


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
