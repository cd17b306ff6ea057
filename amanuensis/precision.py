"""Which precision a model runs at: the one policy the Python API and the CLI share.

``auto`` (the default everywhere) means INT8 where the model has a calibration for the place its
graphs run (the CPU flavour on onnxruntime's CPU EP, a static QDQ flavour for an NPU EP or
OpenVINO), and FP32 otherwise, with a note saying why.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from amanuensis.devices import SessionPlan
from amanuensis.errors import OptionsError
from amanuensis.models import WhisperCheckpoint

PRECISIONS = ("auto", "int8", "fp32")


@dataclass(frozen=True)
class PrecisionChoice:
    precision: str  # "int8" | "fp32": what will run
    table: Path | None  # the range table INT8 graphs are built from
    note: str = ""  # why the choice differs from what was asked or expected (for the user)


def choose_precision(
    checkpoint: WhisperCheckpoint, requested: str, plan: SessionPlan, range_table: Path | None = None
) -> PrecisionChoice:
    """Resolve ``requested`` ("auto", "int8" or "fp32") for this model and plan.

    Raises ``QuantizationUnavailable`` when INT8 is asked for explicitly and cannot be had.
    """
    if requested not in PRECISIONS:
        raise OptionsError(f"unknown precision {requested!r}; choose from {', '.join(PRECISIONS)}")
    if requested == "fp32":
        return PrecisionChoice("fp32", None)
    from amanuensis.quantize import QuantizationUnavailable, find_table, load_table
    from amanuensis.quantize.targets import target_for

    name = checkpoint.files.name
    target, note = target_for(plan.backend, plan.ep), ""
    if range_table is None and target != "cpu" and find_table(name, target) is None:
        target, note = "cpu", f"no {target} calibration for {name}; using the CPU one"
    path = range_table or find_table(name, target)
    try:
        load_table(checkpoint, path, target)
    except QuantizationUnavailable as exc:
        if requested == "int8":
            raise
        return PrecisionChoice("fp32", None, f"{exc}; using fp32")
    return PrecisionChoice("int8", path, note)
