"""QDQ flavours per target: what each accelerator's compiler wants to see in the ONNX graph.

The CPU EP only needs QDQ around the ops that carry the MACs; everything else stays float and
onnxruntime fuses the rest. An NPU compiler such as QNN's HTP wants the whole graph in fixed
point, since its float support is partial or missing (the HTP emulator here has no float GELU),
so that target quantizes every op, with 16-bit activations to keep softmax and LayerNorm accurate.
AMD's Vitis AI NPU wants power-of-two scales (shifts instead of multiplies). Rounding min/max
scales up to one lost up to a bit per tensor and failed the WER gate (+2.46), so that flavour
calibrates with ``minmse``: each activation's power of two is the one that quantizes the
calibration histogram with the least error, as Vitis AI's own quantizer picks them. Its
quantizer also makes activations symmetric by default; on Whisper's encoder that together with
power-of-two scales measured 6.8 dB SQNR (against 22.3 dB for the CPU flavour and 18.2 dB with
asymmetric activations), so activations stay asymmetric here. Its NPU's other format, A16W8
(16-bit activations, float scales), is what the target builds with 16-bit activations.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from amanuensis.errors import OptionsError

TARGET_NAMES = ("cpu", "openvino", "qnn", "vitisai")


@dataclass(frozen=True)
class Target:
    name: str  # the --target value
    quantized_op_types: tuple[str, ...] | None  # ops that get QDQ inputs; None = every op (whole graph)
    default_activation_bits: int  # activation width the target's compiler handles best
    fuse_gelu: bool  # rewrite the erf chain into one Gelu op first (onnxruntime's QNN preprocessing)
    summary: str  # one line for the report and --help
    power_of_two_scales: bool = False  # every Q/DQ scale rounded up to a power of two after quantizing
    default_method: str = "minmax"  # how its activation ranges are calibrated unless --method says otherwise
    weights: str = "int8 (symmetric)"  # how weights are stored (for reports)
    # Attention scores (query × key, both 8-bit) go to the softmax in float instead of being
    # requantized to 8 bits first: onnxruntime's CPU EP runs that as MatMulIntegerToFloat.
    float_scores: bool = False
    # Products whose weights the compiler takes with one scale per output channel: QNN's HTP has
    # per-channel FullyConnected and Conv, not MatMul.
    per_channel_op_types: tuple[str, ...] = ("MatMul", "Gemm", "Conv")
    # (product op type, op type feeding it): products that keep per-tensor weights even with --per-channel
    per_tensor_products: tuple[tuple[str, str], ...] = ()
    # Whether --per-channel is the default: where the compiler takes per-channel weights for free
    # and it measured better on every gate condition.
    per_channel_default: bool = False
    # Attention multiplies exp(s − max s) with V and divides by the row sums after (quantize.unnormalized),
    # so 8-bit attention weights keep each row's largest values; 16-bit ones do not need it.
    unnormalized_attention: bool = False
    # Whether `amanuensis quantize` folds SmoothQuant scaling into the LayerNorms unless told otherwise
    smooth_default: bool = False
    # Whether it splits each FFN's second product by hidden-channel range unless told otherwise
    split_ffn_default: bool = False
    # "static" (calibrated QDQ, what NPU compilers need) or "dynamic" (run-time activation scales)
    default_scheme: str = "static"
    # The format the compiler takes with 16-bit activations, when it differs from the 8-bit one:
    # (calibration method, symmetric activations). None: as with 8 bits.
    wide_format: tuple[str, bool] | None = None

    def method_for(self, activation_bits: int) -> str:
        """How activation ranges are calibrated at this width unless the user says otherwise."""
        return self.wide_format[0] if activation_bits == 16 and self.wide_format else self.default_method

    def symmetric_for(self, activation_bits: int) -> bool:
        """Whether activations are signed with zero point 0 at this width unless the user says otherwise."""
        return self.wide_format[1] if activation_bits == 16 and self.wide_format else False


TARGETS = {
    # Compute ops carry the MACs; Gather is quantized so the embedding tables are stored as int8
    # (onnxruntime folds DQ→Gather→Q into an int8 Gather).
    "cpu": Target(
        "cpu",
        ("MatMul", "Conv", "Gemm", "Gather"),
        8,
        False,
        "QDQ on MatMul/Conv/Gemm/Gather only, uint8 activations, int8 symmetric weights; the rest float",
        float_scores=True,
        default_scheme="dynamic",
    ),
    # OpenVINO's CPU and NPU plugins read the same QDQ ONNX and run each Q/DQ-wrapped MatMul in int8,
    # so the CPU flavour is theirs too; unverified on a real NPU here (none is present).
    "openvino": Target(
        "openvino",
        ("MatMul", "Conv", "Gemm", "Gather"),
        8,
        False,
        "as cpu (OpenVINO reads QDQ ONNX and keeps the rest in f32)",
        unnormalized_attention=True,
        # its shipped table passed the gate with SmoothQuant scaling and per-channel weights
        # (docs/quantization.md); OpenVINO takes per-channel int8 weights on every product
        smooth_default=True,
        per_channel_default=True,
    ),
    "qnn": Target(
        "qnn",
        None,
        16,
        True,
        "every op in fixed point for the HTP: uint16 activations, uint8 weights, GELU fused",
        weights="uint8 (asymmetric, onnxruntime's QNN default)",
        per_channel_op_types=("Gemm", "Conv"),
        # The FFN's second product reads GELU outputs (16-bit, all ≥ −0.17) over 1536 inputs: with
        # per-channel weights the HTP emulator's encoder outputs were 4-5 dB further from FP32
        # than with one scale, while every other product gained (docs/quantization.md).
        per_tensor_products=(("Gemm", "Gelu"),),
        per_channel_default=True,
    ),
    # Unverified on a real VitisAI EP (none can be installed here); the WER gate runs on the CPU EP.
    "vitisai": Target(
        "vitisai",
        ("MatMul", "Conv", "Gemm", "Gather"),
        8,
        False,
        "as cpu, with power-of-two scales: activations' by least error (minmse), weights' rounded up",
        power_of_two_scales=True,
        default_method="minmse",
        weights="int8 (symmetric, power-of-two scale)",
        unnormalized_attention=True,
        # A16W8, its other NPU format: symmetric int16 activations, float scales (recipe.power_of_two_scales);
        # min/max ranges, since least error over a 2048-bin histogram is no finer than 16 bits
        wide_format=("minmax", True),
    ),
}


# INT8 flavour per place the graphs run: NPU compilers and OpenVINO get static QDQ of their own;
# onnxruntime's CPU EP (and anything else) the CPU flavour.
EP_TARGETS = {"QNNExecutionProvider": "qnn", "VitisAIExecutionProvider": "vitisai"}


def target_for(backend: str, ep: str | None) -> str:
    """The INT8 flavour for graphs run by ``backend`` on ``ep``."""
    return "openvino" if backend == "openvino" else EP_TARGETS.get(ep or "", "cpu")


def default_per_channel(target: str, scheme: str) -> bool:
    """Whether weights get one scale per output channel unless the user says otherwise: always
    for run-time activation scales (as faster-whisper's int8), and for the targets that take it."""
    return scheme == "dynamic" or get_target(target).per_channel_default


def get_target(name: str) -> Target:
    if name not in TARGETS:
        raise OptionsError(f"unknown quantization target {name!r}; choose from {', '.join(TARGETS)}")
    return TARGETS[name]


# onnxruntime's QNN preprocessing fuses MatMul + Add into a Gemm named after the MatMul plus this.
FUSION_SUFFIXES = ("/MatMulAddFusion",)


def source_node_name(name: str) -> str:
    """The exported node a (possibly fused) node of a built graph comes from."""
    for suffix in FUSION_SUFFIXES:
        name = name.removesuffix(suffix)
    return name


def prepare_float_model(source: Path, target: Target, workdir: Path) -> Path:
    """The float graph the target's QDQ is placed on (and calibrated against)."""
    output = workdir / f"{source.stem}.{target.name}.onnx"  # named after the graph as exported
    if target.unnormalized_attention:
        import onnx

        from amanuensis.quantize.unnormalized import unnormalized_attention

        unnormalized = workdir / f"{source.stem}.unnormalized.onnx"
        model = onnx.load(str(source))
        unnormalized_attention(model)
        onnx.save(model, str(unnormalized))
        source = unnormalized
    if not target.fuse_gelu:
        return source
    from onnxruntime.quantization.execution_providers.qnn import qnn_preprocess_model

    return output if qnn_preprocess_model(source, output) else source
