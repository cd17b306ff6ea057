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

TABLE_FORMAT = 1  # bump when the table layout changes
METHODS = {
    "minmax": CalibrationMethod.MinMax,
    "entropy": CalibrationMethod.Entropy,
    "percentile": CalibrationMethod.Percentile,
}
# Compute ops carry the MACs; Gather is quantized so the embedding tables are stored as int8
# (onnxruntime folds DQ→Gather→Q into an int8 Gather).
QUANTIZED_OP_TYPES = ("MatMul", "Conv", "Gemm", "Gather")
COMPUTE_OP_TYPES = ("MatMul", "Conv", "Gemm")


@dataclass(frozen=True)
class QuantRecipe:
    """How ranges are calibrated and tensors quantized. Defaults: per-tensor, as the design says."""

    method: str = "minmax"  # calibration: "minmax" | "entropy" | "percentile"
    per_channel: bool = False  # weights per output channel instead of one scale per tensor
    activation_bits: int = 8  # 8 or 16 (16-bit activations: the QNN-style accuracy fallback)
    activation_symmetric: bool = False  # zero point fixed at the middle (signed activations)
    percentile: float = 99.999  # only for method="percentile": share of |values| kept in range

    def __post_init__(self) -> None:
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
        return f"{self.method}, {weights} int8 weights (symmetric), {sym} {self.activation_bits}-bit activations"


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
    (sensitivity analysis). Softmax, LayerNorm, GELU, residual Adds and the attention mask stay
    float: only ``QUANTIZED_OP_TYPES`` get QDQ on their inputs.
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
        with _quiet_root_logger():
            quantize_static(
                str(float_model),
                str(staged),
                calibration_data_reader=None,
                calibration_cache_path=str(cache),
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=list(QUANTIZED_OP_TYPES),
                per_channel=recipe.per_channel,
                activation_type=recipe.activation_type,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=list(exclude or []),
                nodes_to_quantize=list(only or []),
                calibrate_method=CalibrationMethod.MinMax,
                extra_options={
                    "ActivationSymmetric": recipe.activation_symmetric,
                    "WeightSymmetric": True,
                    "MatMulConstBOnly": False,  # attention's activation×activation MatMuls count too
                },
            )
        onnx.checker.check_model(str(staged))
        os.replace(staged, output)
