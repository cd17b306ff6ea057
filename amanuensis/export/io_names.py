"""The graphs' interface to the runtime: input/output names and the mask value.

Kept apart from the builders so that running a model imports neither ``onnx`` nor the export code
(about 25 MB of resident memory that transcription does not need).
"""

from __future__ import annotations

import numpy as np

Feed = dict[str, np.ndarray]  # one session.run input dict, by the names below
MASKED_SCORE = -1e4  # additive mask value: exp() underflows to exactly 0 in float32


def cross_kv_names(layer: int) -> tuple[str, str]:
    """Encoder outputs: a decoder layer's cross-attention keys and values."""
    return f"cross_k_{layer}", f"cross_v_{layer}"


def self_kv_names(layer: int) -> tuple[str, str]:
    """Decoder step inputs: a layer's self-attention cache."""
    return f"self_k_{layer}", f"self_v_{layer}"


def new_kv_names(layer: int) -> tuple[str, str]:
    """Decoder step outputs: the new token's key and value for a layer's cache."""
    return f"new_k_{layer}", f"new_v_{layer}"


def run_time_names(name: str) -> tuple[str, str]:
    """The scale and zero-point tensors that travel with a tensor quantized at run time
    (export.quantized_io folds the CPU flavour's cross K/V quantizers into the encoder)."""
    return (f"{name}_scale", f"{name}_zero_point")
