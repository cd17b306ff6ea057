"""Activation ranges of attention scores that carry the additive mask.

The decoder step masks empty cache slots by adding ``MASKED_SCORE`` (−10⁴) to their scores, so a
calibrated range for the masked scores (and for the mask itself) reaches down to −10⁴. One scale
over that range spends almost every level on masked values: with 16 bits the real scores were
rounded to steps of 0.15 (a probability error of up to 8 % after the softmax), with 8 bits to
steps of 39. The QNN HTP also computed those scores differently from onnxruntime's CPU EP (logits
3.7–15.9 dB apart once the cache filled, against 25–40 dB with the bounds below).

A masked score only has to come out of the softmax as zero, so its range may end just below the
real scores: quantization then saturates a masked score at the range's low end, ``MASK_MARGIN``
below the lowest real score, where the softmax gives it at most e^−16 ≈ 1e-7 of the weight of
any real score (below half a 16-bit step of the softmax output).
"""

from __future__ import annotations

import onnx

from amanuensis.export.io_names import MASKED_SCORE
from amanuensis.quantize.recipe import Ranges

MASK_MARGIN = 16.0  # nats between the lowest real score and where masked scores saturate
_CARRIES_MASK = MASKED_SCORE / 2  # a range whose low end is below this has masked values in it


def bound_masked_ranges(graph: onnx.GraphProto, ranges: Ranges) -> Ranges:
    """``ranges`` with every masked-score range ending ``MASK_MARGIN`` below the real scores, and
    the mask's own range (the mask input and what reshapes it) just deep enough that a masked
    score still saturates there. Tensors without masked values keep their ranges."""
    bounded = dict(ranges)

    def masked(name: str) -> bool:
        return name in ranges and ranges[name][0] <= _CARRIES_MASK

    mask_floor = 0.0  # the mask's new low end: deep enough for every masked sum
    done: set[str] = set()
    for node in graph.node:  # topological order: a Concat's inputs are bounded before it
        outputs = [name for name in node.output if masked(name)]
        if not outputs:
            continue
        inputs = [name for name in node.input if name in ranges]
        scores = [name for name in inputs if not masked(name)]
        if node.op_type == "Add" and len(scores) == 1 and len(inputs) == 2:
            low, high = ranges[scores[0]]
            floor = low - MASK_MARGIN
            mask_floor = min(mask_floor, floor - high)
        elif node.op_type == "Concat" and inputs:
            floor = min(bounded[name][0] for name in inputs)
        else:
            continue  # the mask itself (Reshape of the input): bounded below, once every sum is known
        for name in outputs:
            bounded[name] = (floor, ranges[name][1])
            done.add(name)
    for name, (_, high) in ranges.items():  # the mask: 0 where a slot is read, MASKED_SCORE elsewhere
        if masked(name) and name not in done and high <= 0.0 and mask_floor < 0.0:
            bounded[name] = (mask_floor, high)
    return bounded
