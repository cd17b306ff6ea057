"""``amanuensis quantize``: calibrate, build INT8, gate on WER, keep damaging nodes float, report.

Calibration sees only ``calibration_audio/``; the validation manifest is used to rank node
sensitivity and to decide when the gate passes, never to compute a range.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import onnx
from tqdm import tqdm

from amanuensis import export
from amanuensis.engine import WhisperModel
from amanuensis.evaluation import ManifestEntry, evaluate, read_manifest
from amanuensis.models import WhisperCheckpoint
from amanuensis.quantize import GRAPHS, build_int8_graph, int8_dir
from amanuensis.quantize.analysis import (
    ComputeNode,
    NodeSensitivity,
    compute_nodes,
    int8_mac_share,
    int8_node_names,
    isolated_sensitivity,
)
from amanuensis.quantize.calibration import (
    CalibrationClip,
    RecordedInputs,
    check_disjoint,
    compute_ranges,
    find_calibration_clips,
    record_inputs,
)
from amanuensis.quantize.recipe import QuantRecipe, RangeTable
from amanuensis.runtime import Feed, RuntimeOptions
from amanuensis.transcribe import TranscribeOptions

GATE_MAX_DELTA = 1.0  # WER points (absolute) INT8 may lose against FP32; the product's gate
DEFAULT_TARGET_DELTA = 0.5  # mixed precision keeps going until the loss is at most this
GATE_DECODING = TranscribeOptions(beam_size=1, best_of=1)  # greedy: deterministic and 5× cheaper than beams
SENSITIVITY_CLIPS = 4  # validation clips whose graph inputs rank node sensitivity
SENSITIVITY_ENCODER_WINDOWS = 3
SENSITIVITY_DECODER_STEPS = 64
Log = Callable[[str], None]


@dataclass(frozen=True)
class QuantizeConfig:
    model: str  # tiny.en, base or a CTranslate2 directory
    calibration_dir: Path  # real speech only
    validation_manifest: Path  # disjoint from calibration; used for ranking and the gate
    recipe: QuantRecipe = field(default_factory=QuantRecipe)  # how ranges are calibrated and tensors stored
    target_delta: float = DEFAULT_TARGET_DELTA  # stop keeping nodes float once INT8 loses at most this
    group_size: int = 2  # nodes returned to float per mixed-precision step
    patience: int = 3  # stop after this many steps without a better WER (small sets are noisy)
    threads: int = 0  # intra-op threads (0 = one per core)
    mixed_precision: bool = True  # False: report the all-INT8 result as is


@dataclass(frozen=True)
class GateStep:
    """One mixed-precision attempt."""

    float_nodes: tuple[str, ...]  # every node kept float in this attempt
    int8_mac_share: float  # of all MatMul/Conv/Gemm MACs in encoder + one decoder step
    wer: float  # INT8 WER, percent
    delta: float  # INT8 − FP32, WER points


@dataclass
class QuantizationResult:
    table: RangeTable  # the final one (its excluded_nodes are the mixed-precision result)
    fp32_wer: float
    steps: list[GateStep]
    sensitivity: dict[str, list[NodeSensitivity]]  # graph → ranked nodes
    nodes: dict[str, list[ComputeNode]]  # graph → compute nodes of the FP32 graph
    validation_utterances: int
    calibration_seconds: float
    validation_feeds: dict[str, list[Feed]] = field(default_factory=dict)  # graph → inputs for error analysis

    best_step: int = -1  # index into steps of the attempt the table is taken from

    @property
    def final(self) -> GateStep:
        return self.steps[self.best_step]

    @property
    def passed(self) -> bool:
        return self.final.delta < GATE_MAX_DELTA


def float_graph(checkpoint: WhisperCheckpoint, graph: str) -> Path:
    return export.encoder_path(checkpoint) if graph == "encoder" else export.decoder_step_path(checkpoint, 1)


def calibrate(
    checkpoint: WhisperCheckpoint, clips: list[CalibrationClip], recipe: QuantRecipe, root: Path, threads: int
) -> RangeTable:
    """Record real graph inputs on the calibration clips and compute every activation range."""
    fp32 = WhisperModel(checkpoint, RuntimeOptions(threads=threads))
    with tqdm(total=len(clips), desc="calibration audio", unit="clip") as bar:
        recorded = record_inputs(fp32, clips, root, on_clip=lambda _: bar.update())
    return table_from_inputs(checkpoint, recorded, recipe)


def table_from_inputs(checkpoint: WhisperCheckpoint, recorded: RecordedInputs, recipe: QuantRecipe) -> RangeTable:
    ranges = {}
    for graph, feeds, count in (
        ("encoder", recorded.encoder_feeds(), len(recorded.encoder)),
        ("decoder", recorded.decoder_feeds(), len(recorded.decoder)),
    ):
        with tqdm(total=count, desc=f"{recipe.method} ranges: {graph}", unit="run") as bar:
            ranges[graph] = compute_ranges(float_graph(checkpoint, graph), feeds, recipe, bar.update)
    return RangeTable(checkpoint.files.name, checkpoint.digest, export.EXPORT_VERSION, recipe, recorded.sources, ranges)


def _validation_feeds(fp32: WhisperModel, entries: list[ManifestEntry]) -> dict[str, list[Feed]]:
    clips = [CalibrationClip(e.audio, "") for e in entries[:SENSITIVITY_CLIPS]]
    recorded = record_inputs(fp32, clips)
    decoder = list(recorded.decoder_feeds())
    stride = max(1, len(decoder) // SENSITIVITY_DECODER_STEPS)
    return {"encoder": recorded.encoder[:SENSITIVITY_ENCODER_WINDOWS], "decoder": decoder[::stride]}


def rank_sensitivity(
    checkpoint: WhisperCheckpoint, table: RangeTable, feeds: dict[str, list[Feed]]
) -> tuple[dict[str, list[ComputeNode]], dict[str, list[NodeSensitivity]]]:
    nodes, ranked = {}, {}
    for graph in GRAPHS:
        path = float_graph(checkpoint, graph)
        nodes[graph] = compute_nodes(onnx.load(str(path)))
        with tqdm(total=len(nodes[graph]), desc=f"sensitivity: {graph}", unit="node") as bar:
            ranked[graph] = isolated_sensitivity(
                path, table.recipe, table.ranges[graph], nodes[graph], feeds[graph], lambda _: bar.update()
            )
    return nodes, ranked


def mac_share(checkpoint: WhisperCheckpoint, table: RangeTable, nodes: dict[str, list[ComputeNode]]) -> float:
    """INT8 share of the MACs of one encoder window plus one decoder step, read off the built graphs."""
    all_nodes, int8_names = [], set()
    for graph in GRAPHS:
        built = onnx.load(str(build_int8_graph(checkpoint, table, graph)))
        int8_names |= int8_node_names(built)
        all_nodes += nodes[graph]
    return int8_mac_share(all_nodes, int8_names)


def run_quantization(config: QuantizeConfig, log: Log = print) -> QuantizationResult:
    checkpoint = WhisperCheckpoint.load(config.model)
    clips = find_calibration_clips(config.calibration_dir)
    entries = read_manifest(config.validation_manifest)
    check_disjoint(clips, [e.audio for e in entries])
    log(
        f"calibrating {checkpoint.files.name} on {len(clips)} clips from {config.calibration_dir} "
        f"({config.recipe.describe()})"
    )
    table = calibrate(checkpoint, clips, config.recipe, config.calibration_dir.parent, config.threads)

    fp32 = WhisperModel(checkpoint, RuntimeOptions(threads=config.threads))
    feeds = _validation_feeds(fp32, entries)
    if config.mixed_precision:
        log("ranking node sensitivity on validation inputs")
        nodes, ranked = rank_sensitivity(checkpoint, table, feeds)
    else:  # nothing will be returned to float, so the (slow) ranking would go unused
        nodes = {graph: compute_nodes(onnx.load(str(float_graph(checkpoint, graph)))) for graph in GRAPHS}
        ranked = {graph: [] for graph in GRAPHS}
    log(f"FP32 WER on {len(entries)} validation utterances (greedy)")
    fp32_wer = evaluate(fp32, entries, GATE_DECODING).wer

    order = sorted(
        ((s.sqnr_db, graph, s.node) for graph, ranking in ranked.items() for s in ranking), key=lambda t: t[0]
    )
    steps: list[GateStep] = []
    float_nodes: list[tuple[str, str]] = []
    tables: list[RangeTable] = []
    with tempfile.TemporaryDirectory(prefix="amanuensis-gate-") as tmp:
        while True:
            excluded = {g: [n for gg, n in float_nodes if gg == g] for g in GRAPHS}
            table = replace(table, excluded_nodes=excluded)
            table_path = Path(tmp) / f"table-{len(steps)}.json"
            table.save(table_path)
            tables.append(table)
            int8 = WhisperModel(
                checkpoint, RuntimeOptions(precision="int8", threads=config.threads, range_table=table_path)
            )
            wer = evaluate(int8, entries, GATE_DECODING).wer
            share = mac_share(checkpoint, table, nodes)
            step = GateStep(tuple(n for _, n in float_nodes), share, wer, wer - fp32_wer)
            steps.append(step)
            log(
                f"  {len(float_nodes):2d} nodes float, {share:6.1%} of MACs INT8: "
                f"WER {wer:.2f} (FP32 {fp32_wer:.2f}, Δ {step.delta:+.2f})"
            )
            best = min(range(len(steps)), key=lambda i: steps[i].delta)
            stalled = len(steps) - 1 - best >= config.patience
            if (
                step.delta <= config.target_delta
                or not config.mixed_precision
                or stalled
                or len(float_nodes) == len(order)
            ):
                break
            nxt = order[len(float_nodes) : len(float_nodes) + config.group_size]
            float_nodes += [(g, n) for _, g, n in nxt]
    best = min(range(len(steps)), key=lambda i: steps[i].delta)
    table = tables[best]
    for i, tried in enumerate(tables):
        if i != best:
            shutil.rmtree(int8_dir(checkpoint, tried), ignore_errors=True)
    seconds = sum(c["seconds"] for c in table.calibration)
    return QuantizationResult(table, fp32_wer, steps, ranked, nodes, len(entries), seconds, feeds, best)
