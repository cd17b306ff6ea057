"""Which integer type the CPU flavour stores its weights in, for this machine's kernels.

onnxruntime multiplies uint8 activations by int8 weights. On x86 without VNNI (AVX2, AVX-512
before VNNI) its kernel does that with ``vpmaddubsw``, which adds two u8·s8 products into a
*saturating* int16: 255·127·2 = 64770 does not fit, so a loud activation against a large weight
is clipped, silently. Measured on an AVX2-only EPYC (2026-12-02), the CPU flavour's encoder kept
5.4 dB SQNR against FP32 instead of 17.5. With uint8 weights (the same levels + 128, zero point
128) onnxruntime takes its u8×u8 kernel, which widens to 16 bits before it multiplies: the int32
sums are exactly those a VNNI machine computes from the int8 weights (the float parts of the
graphs still round as this CPU rounds). VNNI (``vpdpbusd``), AMX and ARM's dot products add u8·s8 into int32
and keep the faster int8 form.

The CPU flavour is built on the machine that runs it, so it is built for that machine's kernels
(and cached apart: ``amanuensis.quantize.int8_dir``). The static NPU flavours keep their int8
weights (the NPUs need them); on such a CPU their onnxruntime sessions ask for its u8×u8 kernels
instead (``needs_exact_products``), which rewrite constant int8 weights the same way.
"""

from __future__ import annotations

import os
import platform
from functools import cache

import numpy as np
import onnx
from onnx import numpy_helper

from amanuensis.errors import OptionsError
from amanuensis.export.graph_index import GraphIndex

SIGNED, UNSIGNED = "int8", "uint8"
WEIGHTS_ENV = "AMANUENSIS_INT8_WEIGHTS"  # "int8" or "uint8": overrides what the CPU's flags say
# cpuinfo flags of the instructions that sum u8·s8 products in int32
INT32_DOT_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})
X86_MACHINES = frozenset({"x86_64", "amd64", "i386", "i686", "x86"})
OFFSET = 128  # int8 level v is stored as the uint8 v + 128


def _cpu_flags() -> frozenset[str] | None:
    """The CPU's feature flags from /proc/cpuinfo (Linux); None where they cannot be read."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.partition(":")[2].split())
    except OSError:
        return None
    return None


@cache
def saturating_cpu() -> bool:
    """Whether onnxruntime's CPU EP here may clip u8×s8 products: x86 without a VNNI flag, or x86
    whose flags cannot be read."""
    if platform.machine().lower() not in X86_MACHINES:
        return False
    flags = _cpu_flags()
    return flags is None or not flags & INT32_DOT_FLAGS


@cache
def weight_storage() -> str:
    """``uint8`` where the CPU may saturate (uint8 weights are exact on every kernel, only slower),
    else ``int8``; ``$AMANUENSIS_INT8_WEIGHTS`` overrides."""
    override = os.environ.get(WEIGHTS_ENV)
    if override:
        if override not in (SIGNED, UNSIGNED):
            raise OptionsError(f"{WEIGHTS_ENV} must be {SIGNED} or {UNSIGNED}, not {override!r}")
        return override
    return UNSIGNED if saturating_cpu() else SIGNED


def needs_exact_products() -> bool:
    """Whether INT8 sessions on onnxruntime's CPU EP here must ask for its u8×u8 kernels
    (``session.x64quantprecision``): the static NPU flavours keep int8 weights, which it would
    otherwise saturate. Only where the CPU flavour's weights are uint8 too: onnxruntime's own
    weight rewrite fails on the dynamic encoder's int8 weights (onnxruntime 1.32)."""
    return saturating_cpu() and weight_storage() == UNSIGNED


def store_weights_unsigned(model: onnx.ModelProto) -> int:
    """Give every integer product's int8 right operand the uint8 form, in place: stored weights
    (read directly or transposed) become their levels + 128, an operand quantized at run time gets
    the zero point 128, and each zero point moves with them, so every product keeps its value.
    Other readers of a converted table (the embedding's Gather) read its zero point, which moves
    too. Returns how many products were changed."""
    index = GraphIndex(model.graph)
    converted: set[str] = set()

    def signed(name: str) -> bool:
        tensor = index.initializers.get(name)
        return name in converted or (tensor is not None and tensor.data_type == onnx.TensorProto.INT8)

    def to_unsigned(name: str) -> None:
        if name not in converted:
            tensor = index.initializers[name]
            values = numpy_helper.to_array(tensor).astype(np.int16) + OFFSET
            tensor.CopyFrom(numpy_helper.from_array(values.astype(np.uint8), name))
            converted.add(name)

    changed = 0
    for node in model.graph.node:
        if node.op_type != "MatMulInteger" or len(node.input) < 4:
            continue
        right = node.input[1]
        producer = index.producer.get(right)
        if producer is not None and producer.op_type == "Transpose":
            right, producer = producer.input[0], None
        quantized_at_run_time = producer is not None and producer.op_type == "QuantizeLinear"
        operand = producer.input[2] if quantized_at_run_time and len(producer.input) > 2 else right
        if signed(operand) and signed(node.input[3]):
            to_unsigned(operand)  # stored levels, or the zero point the run-time levels come out around
            to_unsigned(node.input[3])
            changed += 1
    _retype_derived(model.graph, index, converted)
    return changed


def _retype_derived(graph: onnx.GraphProto, index: GraphIndex, converted: set[str]) -> None:
    """Declared types of what the converted tensors feed (a table's Transpose or Gather, a
    QuantizeLinear whose zero point moved): uint8 now, or onnxruntime refuses the graph."""
    derived = {
        out
        for name in converted
        for node in index.users(name)
        if (node.op_type in ("Transpose", "Gather") and node.input[0] == name)
        or (node.op_type == "QuantizeLinear" and len(node.input) > 2 and node.input[2] == name)
        for out in node.output[:1]
    }
    for info in [*graph.value_info, *graph.output]:
        if info.name in derived:
            info.type.tensor_type.elem_type = onnx.TensorProto.UINT8
