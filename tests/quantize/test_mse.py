"""minmse ranges on a real tensor (the sample's log-mel window): what onnxruntime builds from them."""

from __future__ import annotations

import numpy as np
import pytest

from amanuensis.quantize.mse import best_range, quantization_error, scale_and_zero_point
from amanuensis.quantize.recipe import QuantRecipe


@pytest.fixture(scope="module")
def histogram(mel_window: np.ndarray):
    values = mel_window.ravel()
    threshold = float(np.abs(values).max())
    counts, edges = np.histogram(values, 2048, range=(-threshold, threshold))
    return counts, edges, float(values.min()), float(values.max())


def test_power_of_two_target_gets_an_exact_power_of_two_and_no_more_error(histogram) -> None:
    recipe = QuantRecipe(method="minmse", target="vitisai")
    low, high = best_range(histogram, recipe)
    scale, *_ = scale_and_zero_point(low, high, recipe)
    power = np.exp2(np.ceil(np.log2(scale)))  # what the vitisai build rounds it to
    assert scale <= power < scale * 1.001
    lowest, highest = histogram[2], histogram[3]
    minmax_scale, *_ = scale_and_zero_point(min(lowest, 0.0), max(highest, 0.0), recipe)
    factor = np.exp2(np.ceil(np.log2(minmax_scale))) / minmax_scale  # min/max rounded up, as before minmse
    rounded_up = quantization_error(histogram, min(lowest, 0.0) * factor, max(highest, 0.0) * factor, recipe)
    assert quantization_error(histogram, low, high, recipe) <= rounded_up


def test_other_targets_shrink_the_range_only_when_it_lowers_the_error(histogram) -> None:
    recipe = QuantRecipe(method="minmse")
    low, high = best_range(histogram, recipe)
    lowest, highest = min(histogram[2], 0.0), max(histogram[3], 0.0)
    assert lowest <= low <= 0.0 <= high <= highest
    assert high / highest == pytest.approx(low / lowest)  # both ends shrink together (zero point kept)
    assert quantization_error(histogram, low, high, recipe) <= quantization_error(histogram, lowest, highest, recipe)
