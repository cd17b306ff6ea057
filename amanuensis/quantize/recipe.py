"""What an INT8 build is made of: the recipe and the calibrated range table (the build: ``qdq``).

The range table is the expensive part (it needs the FP32 pipeline run over the calibration audio),
so it is computed once by ``amanuensis quantize`` and committed; building the QDQ graphs from it
takes seconds, which is what a fresh install does.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from amanuensis.errors import OptionsError, UserError
from amanuensis.quantize.targets import default_per_channel, get_target

if TYPE_CHECKING:
    from onnxruntime.quantization import QuantType

TABLE_FORMAT = 1  # bump when the table layout changes
SCHEMES = ("static", "dynamic")  # calibrated QDQ; or integer kernels with run-time scales (quantize.dynamic)
METHODS = ("minmax", "entropy", "percentile", "minmse")  # qdq.CALIBRATION_METHODS; minmse: see quantize.mse
COMPUTE_OP_TYPES = ("MatMul", "Conv", "Gemm")


@dataclass(frozen=True)
class QuantRecipe:
    """How ranges are calibrated and tensors quantized. Defaults: per-tensor, as the design says."""

    method: str = "minmax"  # calibration: "minmax" | "entropy" | "percentile" | "minmse"
    per_channel: bool = False  # weights per output channel instead of one scale per tensor
    activation_bits: int = 8  # 8 or 16 (16-bit activations: the QNN-style accuracy fallback)
    activation_symmetric: bool = False  # zero point fixed at the middle (signed activations)
    percentile: float = 99.999  # only for method="percentile": share of |values| kept in range
    target: str = "cpu"  # QDQ flavour: which ops get QDQ and how the graph is prepared (targets.TARGETS)
    # "static": calibrated QDQ, what NPU compilers need; "dynamic": activation scales measured at run
    # time (CPU only; nothing is calibrated, so method, activation_bits and symmetry do not apply)
    scheme: str = "static"
    # SmoothQuant scaling folded into each LayerNorm before its MatMuls, α chosen per LayerNorm on
    # calibration inputs (quantize.smooth); static scheme only
    smooth: bool = False
    # the second product of each FFN split by hidden-channel group, so its loud channels get their
    # own activation range (quantize.split); static scheme only
    split_ffn: bool = False

    @classmethod
    def for_target(
        cls,
        target: str = "cpu",
        *,
        scheme: str | None = None,
        method: str | None = None,
        per_channel: bool | None = None,
        activation_bits: int | None = None,
        activation_symmetric: bool | None = None,
        smooth: bool | None = None,
        split_ffn: bool | None = None,
    ) -> QuantRecipe:
        """The recipe for a target, each option left None taking the target's default, so that
        ``amanuensis quantize`` and the Python API build the same thing."""
        spec = get_target(target)
        scheme = scheme or spec.default_scheme
        static = scheme == "static"
        bits = activation_bits or spec.default_activation_bits
        return cls(
            method=method or spec.method_for(bits),
            per_channel=default_per_channel(target, scheme) if per_channel is None else per_channel,
            activation_bits=bits,
            activation_symmetric=spec.symmetric_for(bits) if activation_symmetric is None else activation_symmetric,
            target=target,
            scheme=scheme,
            smooth=spec.smooth_default and static if smooth is None else smooth,
            split_ffn=spec.split_ffn_default and static if split_ffn is None else split_ffn,
        )

    def __post_init__(self) -> None:
        get_target(self.target)
        if self.scheme not in SCHEMES:
            raise OptionsError(f"unknown quantization scheme {self.scheme!r}; choose from {', '.join(SCHEMES)}")
        if self.scheme == "dynamic" and self.target != "cpu":
            raise OptionsError("run-time (dynamic) activation scales are for the CPU only; NPU targets need static QDQ")
        if self.method not in METHODS:
            raise OptionsError(f"unknown calibration method {self.method!r}; choose from {', '.join(METHODS)}")
        if self.activation_bits not in (8, 16):
            raise OptionsError("activation width must be 8 or 16 bits")
        if self.smooth and self.scheme != "static":
            raise OptionsError("SmoothQuant scaling is for static (calibrated) activation ranges")
        if self.split_ffn and self.scheme != "static":
            raise OptionsError("splitting FFN channels by range is for static (calibrated) activation ranges")
        if self.split_ffn and get_target(self.target).quantized_op_types is None:
            # a whole-graph flavour quantizes the Split too, and its outputs share its input's scale
            raise OptionsError(f"--split-ffn needs a target that quantizes only compute ops, not {self.target}")

    @property
    def power_of_two_scales(self) -> bool:
        """Whether every Q/DQ scale is a power of two: the target's 8-bit format (Vitis AI's XINT8).
        Its 16-bit format (A16W8) has float scales."""
        return get_target(self.target).power_of_two_scales and self.activation_bits == 8

    @property
    def activation_type(self) -> QuantType:
        from onnxruntime.quantization import QuantType

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
        if self.method == "minmse":  # the entropy calibrator's histograms, read by quantize.mse
            return {"num_bins": 2048, "num_quantized_bins": 128}
        return {"num_bins": 512, "num_quantized_bins": 128}

    def describe(self) -> str:
        if self.scheme == "dynamic":
            granularity = "per-channel" if self.per_channel else "per-tensor"
            return f"dynamic: {granularity} int8 weights, uint8 activations with run-time per-tensor scales"
        sym = "symmetric" if self.activation_symmetric else "asymmetric"
        granularity = "per-channel" if self.per_channel else "per-tensor"
        target = get_target(self.target)
        stored = target.weights if self.power_of_two_scales == target.power_of_two_scales else "int8 (symmetric)"
        weights = f"{granularity} {stored} weights"
        if self.per_channel and target.quantized_op_types is None:  # stored per channel by quantize.weights
            kept = ", ".join(f"{op} after {feeder}" for op, feeder in target.per_tensor_products)
            weights = f"per-channel int8 (symmetric) weights ({kept}: per-tensor {target.weights})"
        text = f"{self.method}, {weights}, {sym} {self.activation_bits}-bit activations"
        if self.smooth:
            text += ", SmoothQuant scaling before LayerNorm-fed MatMuls"
        if self.split_ffn:
            text += ", FFN second products split by channel range"
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
    export_version: int  # amanuensis.export.VERSIONS["export"] of those graphs
    recipe: QuantRecipe
    calibration: list[dict]  # one {"path", "sha256", "seconds"} per calibration clip
    ranges: dict[str, Ranges]  # graph ("encoder" | "decoder") → tensor ranges
    excluded_nodes: dict[str, list[str]] = field(default_factory=dict)  # graph → nodes kept in float
    # graph → node → finer integer form (quantize.per_row.TECHNIQUES; dynamic scheme only)
    node_techniques: dict[str, dict[str, str]] = field(default_factory=dict)
    # graph → LayerNorm output → {"alpha", "scales"}: SmoothQuant scaling folded in before QDQ (quantize.smooth)
    smoothing: dict[str, dict[str, dict]] = field(default_factory=dict)
    # graph → FFN second-product node → its hidden channels per group, loudest first (quantize.split)
    splits: dict[str, dict[str, list[list[int]]]] = field(default_factory=dict)

    def fingerprint(self) -> str:
        """Short hash naming the cache folder of graphs built from this table."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    def to_dict(self) -> dict:
        techniques = {g: t for g, t in self.node_techniques.items() if t}
        optional = {
            key: entries
            for key, entries in (
                ("node_techniques", techniques),
                ("smoothing", {g: t for g, t in self.smoothing.items() if t}),
                ("splits", {g: t for g, t in self.splits.items() if t}),
            )
            if entries
        }
        return optional | {
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
            raise UserError(f"range table format {data.get('format')} is not {TABLE_FORMAT}")
        return cls(
            model=data["model"],
            weights_digest=data["weights_digest"],
            export_version=data["export_version"],
            recipe=QuantRecipe(**data["recipe"]),
            calibration=data["calibration"],
            ranges={g: {k: (lo, hi) for k, (lo, hi) in r.items()} for g, r in data["ranges"].items()},
            excluded_nodes=data.get("excluded_nodes", {}),
            node_techniques=data.get("node_techniques", {}),
            smoothing=data.get("smoothing", {}),
            splits=data.get("splits", {}),
        )

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: Path) -> RangeTable:
        return cls.from_dict(json.loads(path.read_text()))
