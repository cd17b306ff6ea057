"""How wide the signed operand of an integer product may be on this machine's CPU kernels.

onnxruntime multiplies uint8 activations by int8 weights. On x86 without VNNI (AVX2, AVX-512
before VNNI) its kernel does that with ``vpmaddubsw``, which adds two u8·s8 products into a
*saturating* int16: 255·127·2 = 64770 does not fit, so a loud activation against a large weight
is clipped, silently. Measured on an AVX2-only EPYC (2026-12-02), the CPU flavour's encoder then
kept 5.4 dB SQNR against FP32 instead of 16–18. onnxruntime's own answer is ``reduce_range``:
weights on ±64 levels, 255·64·2 = 32640, which fits. VNNI (``vpdpbusd``), AMX and ARM's dot
products add into int32 and take the full ±127.

The CPU flavour is built on the machine that runs it, so it is built for that machine's kernels
(and cached apart: ``amanuensis.quantize.int8_dir``).
"""

from __future__ import annotations

import os
import platform
from functools import cache

from amanuensis.errors import OptionsError

FULL_LEVELS = 127  # int8 levels each side of zero
NARROW_LEVELS = 64  # onnxruntime's reduce_range for int8: 255 · 64 · 2 fits an int16
LEVELS_ENV = "AMANUENSIS_INT8_LEVELS"  # "127" or "64": overrides what the CPU's flags say
# cpuinfo flags of the instructions that sum u8·s8 products in int32
INT32_DOT_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})
X86_MACHINES = frozenset({"x86_64", "amd64", "i386", "i686", "x86"})
# Static NPU graphs keep full int8 weights (the NPU needs them so); measured on such a CPU's EP
STATIC_ON_SATURATING_CPU = (
    "warning: this CPU has no VNNI, so onnxruntime's CPU EP saturates the u8×s8 products of the {target} "
    "graphs measured here: their WER is not what the NPU computes (measure on a VNNI machine)"
)


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
def signed_levels() -> int:
    """Levels each side of zero for the int8 operand of this machine's integer products.

    The narrow form wherever the kernel might saturate: x86 without a VNNI flag, or x86 whose flags
    cannot be read (narrow weights are exact on every kernel, only a little coarser)."""
    override = os.environ.get(LEVELS_ENV)
    if override:
        if override not in (str(FULL_LEVELS), str(NARROW_LEVELS)):
            raise OptionsError(f"{LEVELS_ENV} must be {FULL_LEVELS} or {NARROW_LEVELS}, not {override!r}")
        return int(override)
    if platform.machine().lower() not in X86_MACHINES:
        return FULL_LEVELS
    flags = _cpu_flags()
    return FULL_LEVELS if flags is not None and flags & INT32_DOT_FLAGS else NARROW_LEVELS
