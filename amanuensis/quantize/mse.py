"""Ranges that minimise quantization error instead of covering every value seen (``--method minmse``).

A min/max range is set by the rarest outliers; on a power-of-two target it is then rounded up,
losing up to a bit of resolution for every value. Here each tensor's range is picked from
candidates by the mean squared error of quantizing the calibration histogram with it: a little
clipping of rare values can buy resolution for all the others. Vitis AI's quantizer chooses its
power-of-two scales the same way (its MinMSE method); on other targets the candidate scales are
finer steps below the min/max scale.
"""

from __future__ import annotations

import numpy as np
from onnxruntime.quantization.quant_utils import compute_scale_zp, get_qmin_qmax_for_qType

from amanuensis.quantize.recipe import QuantRecipe, Ranges

POWER_OF_TWO_CANDIDATES = 8  # powers of two tried, from the one covering min/max downwards
FINE_CANDIDATES = 33  # scales tried otherwise: min/max scale × 2^(−i/8), i = 0…32 (down to 1/16)
# Headroom so that a chosen power-of-two scale is not rounded up to the next one by float error.
BELOW_POWER_OF_TWO = 1 - 1e-5

Histogram = tuple[np.ndarray, np.ndarray, float, float]  # counts, bin edges, lowest, highest


def scale_and_zero_point(low: float, high: float, recipe: QuantRecipe) -> tuple[float, float, int, int]:
    """What onnxruntime's quantizer makes of a range: (scale, zero point, qmin, qmax)."""
    qmin, qmax = get_qmin_qmax_for_qType(recipe.activation_type.tensor_type, symmetric=recipe.activation_symmetric)
    zero_point, scale = compute_scale_zp(
        np.float32(low), np.float32(high), qmin, qmax, symmetric=recipe.activation_symmetric
    )
    return float(scale), float(zero_point), int(qmin), int(qmax)


def quantization_error(histogram: Histogram, low: float, high: float, recipe: QuantRecipe) -> float:
    """Mean squared error of quantizing the histogram's values (its bin centres) with this range."""
    counts, edges, _, _ = histogram
    centres = (edges[:-1] + edges[1:]) / 2
    scale, zero_point, qmin, qmax = scale_and_zero_point(low, high, recipe)
    if scale == 0:
        return float(np.sum(counts * centres**2) / max(counts.sum(), 1))
    restored = (np.clip(np.round(centres / scale) + zero_point, qmin, qmax) - zero_point) * scale
    return float(np.sum(counts * (restored - centres) ** 2) / max(counts.sum(), 1))


def best_range(histogram: Histogram, recipe: QuantRecipe) -> tuple[float, float]:
    """The candidate range (a shrunk min/max range) with the least quantization error."""
    _, _, lowest, highest = histogram
    low, high = min(float(lowest), 0.0), max(float(highest), 0.0)
    scale, _, _, _ = scale_and_zero_point(low, high, recipe)
    if scale == 0:
        return low, high
    if recipe.power_of_two_scales:
        top = np.exp2(np.ceil(np.log2(scale)))
        factors = [top * BELOW_POWER_OF_TWO / 2**i / scale for i in range(POWER_OF_TWO_CANDIDATES)]
    else:
        factors = [2 ** (-i / 8) for i in range(FINE_CANDIDATES)]
    candidates = [(low * f, high * f) for f in factors]
    return min(candidates, key=lambda c: quantization_error(histogram, c[0], c[1], recipe))


def min_mse_ranges(histograms: dict[str, tuple], recipe: QuantRecipe) -> Ranges:
    """Tensor → range, from onnxruntime's histogram collector: (counts, edges, min, max, threshold)."""
    return {name: best_range((h[0], h[1], h[2], h[3]), recipe) for name, h in histograms.items()}
