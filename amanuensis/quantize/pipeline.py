"""``amanuensis quantize``: calibrate, build INT8, gate on WER, keep damaging nodes float, report.

Calibration sees only ``calibration_audio/`` (clean, and mixed with its own noise recordings), which
also ranks node sensitivity; the gate's conditions (clean validation speech, the same in noise the
calibration never heard, NOIZEUS) only decide whether an attempt passes, never a range or a rank.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import onnx
from tqdm import tqdm

from amanuensis import export
from amanuensis.conditions import Condition, ConditionResult, compare, gate_passed, gate_shortfall
from amanuensis.engine import WhisperModel
from amanuensis.errors import OptionsError
from amanuensis.evaluation import EvaluationReport, ManifestEntry, evaluate
from amanuensis.export import GraphKind
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
    NOISE_FOLDER,
    SENSITIVITY_CLIPS,
    CalibrationClip,
    RecordedInputs,
    check_disjoint,
    compute_ranges,
    find_calibration_clips,
    record_inputs,
    sensitivity_clips,
    with_noisy_copies,
)
from amanuensis.quantize.dynamic import KEPT_INTEGER
from amanuensis.quantize.per_row import TECHNIQUES, choose_technique
from amanuensis.quantize.recipe import QuantRecipe, RangeTable
from amanuensis.quantize.smooth import smoothing_for
from amanuensis.quantize.split import rewritten_copy, splitting_for, table_rewrite
from amanuensis.runtime import Feed, RuntimeOptions
from amanuensis.transcribe import TranscribeOptions

GATE_MAX_DELTA = 1.0  # WER points INT8 may never lose on clean speech; each condition sets a tighter limit
DEFAULT_TARGET_DELTA = (
    0.5  # mixed precision keeps going until clean speech loses at most this, and every condition passes
)
DEFAULT_GROUP_SIZE = 2  # nodes moved per mixed-precision step: small steps keep few nodes off plain INT8
GATE_DECODING = TranscribeOptions(beam_size=1, best_of=1)  # greedy: deterministic and 5× cheaper than beams
SENSITIVITY_ENCODER_WINDOWS = 3
SENSITIVITY_DECODER_STEPS = 64
Log = Callable[[str], None]


@dataclass(frozen=True)
class QuantizeConfig:
    model: str  # tiny.en, base or a CTranslate2 directory
    calibration_dir: Path  # real speech only, and real noise recordings in its noise/ folder
    conditions: tuple[Condition, ...]  # what the gate judges (clean first); none shares audio with calibration
    recipe: QuantRecipe = field(default_factory=QuantRecipe.for_target)  # the CLI's default: cpu
    target_delta: float = DEFAULT_TARGET_DELTA  # stop keeping nodes float once clean speech loses at most this
    group_size: int = DEFAULT_GROUP_SIZE  # nodes moved to a finer form (or float) per mixed-precision step
    patience: int = 3  # stop after this many steps without a better score (small sets are noisy)
    threads: int = 0  # intra-op threads (0 = one per core)
    mixed_precision: bool = True  # False: report the all-INT8 result as is
    noisy_calibration: bool = True  # also calibrate on each clip mixed with real noise

    def __post_init__(self) -> None:
        if self.group_size < 1 or self.patience < 1:
            raise OptionsError(f"group_size and patience must be at least 1 (got {self.group_size}, {self.patience})")


@dataclass(frozen=True)
class GateStep:
    """One mixed-precision attempt, judged on every condition."""

    float_nodes: tuple[str, ...]  # every node kept float in this attempt
    int8_mac_share: float  # of all MatMul/Conv/Gemm MACs in encoder + one decoder step: integer kernels
    results: tuple[ConditionResult, ...]  # per condition, clean first
    techniques: tuple[tuple[str, str], ...] = ()  # (node, finer integer form) in this attempt
    a16_mac_share: float = 0.0  # the part of int8_mac_share with 16-bit activations

    @property
    def wer(self) -> float:  # clean speech, percent
        return self.results[0].int8_wer

    @property
    def delta(self) -> float:  # clean speech, INT8 − FP32 points
        return self.results[0].delta

    @property
    def passed(self) -> bool:
        return gate_passed(self.results)

    @property
    def shortfall(self) -> float:
        """How far from passing (conditions.gate_shortfall; 0 = passes)."""
        return gate_shortfall(self.results)


@dataclass
class QuantizationResult:
    table: RangeTable  # the final one (its excluded_nodes are the mixed-precision result)
    fp32: dict[str, EvaluationReport]  # condition → FP32 evaluation
    steps: list[GateStep]
    sensitivity: dict[str, list[NodeSensitivity]]  # graph → ranked nodes
    nodes: dict[str, list[ComputeNode]]  # graph → compute nodes of the FP32 graph
    conditions: tuple[Condition, ...]
    calibration_seconds: float
    validation_feeds: dict[str, list[Feed]] = field(default_factory=dict)  # graph → inputs for error analysis
    # graph → node → output SQNR (dB) with only that node quantized in each finer form the search tried
    technique_sqnr: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)

    best_step: int = -1  # index into steps of the attempt the table is taken from

    @property
    def final(self) -> GateStep:
        return self.steps[self.best_step]

    @property
    def fp32_wer(self) -> float:
        return self.final.results[0].fp32_wer

    @property
    def validation_utterances(self) -> int:
        return len(self.conditions[0].entries)

    @property
    def passed(self) -> bool:
        return self.final.passed


def float_graph(checkpoint: WhisperCheckpoint, graph: GraphKind) -> Path:
    return export.graph_path(checkpoint, graph)


def calibrate(
    checkpoint: WhisperCheckpoint, clips: list[CalibrationClip], recipe: QuantRecipe, root: Path, threads: int
) -> tuple[RangeTable, dict[str, list[Feed]]]:
    """Record real graph inputs on the calibration clips and compute every activation range (none
    for the dynamic scheme, which only records a few clips to rank node sensitivity on).
    Returns the table and the sensitivity inputs."""
    fp32 = WhisperModel(checkpoint, RuntimeOptions(precision="fp32", threads=threads))
    if recipe.scheme == "dynamic":
        clips = sensitivity_clips(clips)
    with tqdm(total=len(clips), desc="calibration audio", unit="clip") as bar:
        recorded = record_inputs(fp32, clips, root, on_clip=lambda _: bar.update())
    feeds = sensitivity_feeds(recorded)
    if recipe.scheme == "dynamic":
        table = RangeTable(
            checkpoint.files.name, checkpoint.digest, export.VERSIONS["export"], recipe, recorded.sources, {}
        )
        return table, feeds
    return table_from_inputs(checkpoint, recorded, recipe), feeds


def table_from_inputs(checkpoint: WhisperCheckpoint, recorded: RecordedInputs, recipe: QuantRecipe) -> RangeTable:
    """Every activation range, of the rewritten graphs when the recipe splits FFNs or smooths
    (channel groups and α chosen on the same inputs)."""
    ranges, smoothing, splits = {}, {}, {}
    with tempfile.TemporaryDirectory(prefix="amanuensis-rewrite-") as tmp:
        for graph, feeds, count in (
            (GraphKind.ENCODER, recorded.encoder_feeds, len(recorded.encoder)),
            (GraphKind.DECODER, recorded.decoder_feeds, len(recorded.decoder)),
        ):
            source = float_graph(checkpoint, graph)
            splits[graph] = smoothing[graph] = {}
            if recipe.split_ffn:
                bar = tqdm(feeds(), total=count, desc=f"FFN channel groups: {graph}", unit="run")
                splits[graph] = splitting_for(source, bar, count)
            source = rewritten_copy(source, splits[graph], {}, Path(tmp))
            if recipe.smooth:
                bar = tqdm(feeds(), total=count, desc=f"SmoothQuant: {graph}", unit="run")
                smoothing[graph] = smoothing_for(source, bar, count, recipe.activation_bits, recipe.per_channel)
                source = rewritten_copy(source, {}, smoothing[graph], Path(tmp))
            with tqdm(total=count, desc=f"{recipe.method} ranges: {graph}", unit="run") as bar:
                ranges[graph] = compute_ranges(source, feeds(), recipe, bar.update)
    return RangeTable(
        checkpoint.files.name,
        checkpoint.digest,
        export.VERSIONS["export"],
        recipe,
        recorded.sources,
        ranges,
        smoothing={g: s for g, s in smoothing.items() if s},
        splits={g: s for g, s in splits.items() if s},
    )


def table_graph(checkpoint: WhisperCheckpoint, table: RangeTable, graph: GraphKind, directory: Path) -> Path:
    """The float graph a table's QDQ build starts from (FFN splits and smoothing folded in)."""
    return table_rewrite(float_graph(checkpoint, graph), table, graph, directory)


def sensitivity_feeds(recorded: RecordedInputs) -> dict[str, list[Feed]]:
    """A few encoder windows and evenly spaced decoder steps, spread over the recorded clips."""
    encoder = recorded.encoder[:: max(1, len(recorded.encoder) // SENSITIVITY_ENCODER_WINDOWS)]
    states = recorded.decoder[:: max(1, len(recorded.decoder) // SENSITIVITY_DECODER_STEPS)]
    # Expanded only once picked: a full feed holds the whole 448-slot cache (megabytes per step).
    return {
        GraphKind.ENCODER: encoder[:SENSITIVITY_ENCODER_WINDOWS],
        GraphKind.DECODER: [s.feed(recorded.dims) for s in states],
    }


def _validation_feeds(fp32: WhisperModel, entries: tuple[ManifestEntry, ...]) -> dict[str, list[Feed]]:
    """Inputs for the report's per-tensor error analysis (never used to choose anything)."""
    clips = [CalibrationClip(e.audio, "") for e in entries[:SENSITIVITY_CLIPS]]
    return sensitivity_feeds(record_inputs(fp32, clips))


def rank_sensitivity(
    checkpoint: WhisperCheckpoint,
    table: RangeTable,
    nodes: dict[str, list[ComputeNode]],
    feeds: dict[str, list[Feed]],
) -> dict[str, list[NodeSensitivity]]:
    ranked = {}
    with tempfile.TemporaryDirectory(prefix="amanuensis-rewrite-") as tmp:
        for graph in GRAPHS:
            path = table_graph(checkpoint, table, graph, Path(tmp))
            with tqdm(total=len(nodes[graph]), desc=f"sensitivity: {graph}", unit="node") as bar:
                ranked[graph] = isolated_sensitivity(
                    path, table.recipe, table.ranges.get(graph, {}), nodes[graph], feeds[graph], lambda _: bar.update()
                )
    return ranked


def sixteen_bit_nodes(table: RangeTable, graph: GraphKind, integer_nodes: set[str]) -> set[str]:
    """The integer nodes of one graph whose activations are 16-bit: all of them for a 16-bit
    static recipe, else those the table gives the ``a16`` form."""
    if table.recipe.scheme == "static":
        return set(integer_nodes) if table.recipe.activation_bits == 16 else set()
    return {n for n, t in table.node_techniques.get(graph, {}).items() if t == "a16"} & integer_nodes


def mac_shares(
    checkpoint: WhisperCheckpoint, table: RangeTable, nodes: dict[str, list[ComputeNode]]
) -> tuple[float, float]:
    """Integer share of the MACs of one encoder window plus one decoder step, read off the built
    graphs, and the part of it with 16-bit activations."""
    all_nodes, integer, wide = [], set(), set()
    for graph in GRAPHS:
        built = onnx.load(str(build_int8_graph(checkpoint, table, graph)))
        names = int8_node_names(built)
        integer |= names
        wide |= sixteen_bit_nodes(table, graph, names)
        all_nodes += nodes[graph]
    return int8_mac_share(all_nodes, integer), int8_mac_share(all_nodes, wide)


def evaluate_conditions(
    model: WhisperModel, conditions: Sequence[Condition], label: str
) -> dict[str, EvaluationReport]:
    """Each condition decoded as the gate decodes it (greedy; in its language, detection checked)."""
    reports = {}
    with tqdm(total=sum(len(c.entries) for c in conditions), desc=f"gate: {label}", unit="clip") as bar:
        for c in conditions:
            decoding = replace(GATE_DECODING, language=c.language)
            detect = c.language is not None  # a language set: does the model still tell its language?
            reports[c.name] = evaluate(model, list(c.entries), decoding, lambda _: bar.update(), detect)
    return reports


def run_quantization(config: QuantizeConfig, log: Log = print) -> QuantizationResult:
    checkpoint = WhisperCheckpoint.load(config.model)
    clips = find_calibration_clips(config.calibration_dir, multilingual=checkpoint.is_multilingual)
    for condition in config.conditions:
        check_disjoint(clips, [e.audio for e in condition.entries])
    if config.noisy_calibration:
        clips = with_noisy_copies(clips, config.calibration_dir / NOISE_FOLDER)
    log(
        f"calibrating {checkpoint.files.name} on {len(clips)} clips from {config.calibration_dir} "
        f"({config.recipe.describe()})"
    )
    table, ranking_feeds = calibrate(checkpoint, clips, config.recipe, config.calibration_dir.parent, config.threads)

    fp32 = WhisperModel(checkpoint, RuntimeOptions(precision="fp32", threads=config.threads))
    with tempfile.TemporaryDirectory(prefix="amanuensis-rewrite-") as tmp:
        nodes = {
            graph: compute_nodes(onnx.load(str(table_graph(checkpoint, table, graph, Path(tmp))))) for graph in GRAPHS
        }
    ranked: dict[str, list[NodeSensitivity]] = {graph: [] for graph in GRAPHS}  # ranked once a step fails
    order: list[tuple[float, str, str]] = []
    log(f"FP32 WER on {', '.join(c.name for c in config.conditions)} (greedy)")
    fp32_reports = evaluate_conditions(fp32, config.conditions, "FP32")

    steps: list[GateStep] = []
    float_nodes: list[tuple[str, str]] = []
    chosen: dict[tuple[str, str], str] = {}  # (graph, node) → finer integer form
    measured: dict[str, dict[str, dict[str, float]]] = {graph: {} for graph in GRAPHS}  # technique SQNRs
    tables: list[RangeTable] = []
    with tempfile.TemporaryDirectory(prefix="amanuensis-gate-") as tmp:
        while True:
            excluded = {g: [n for gg, n in float_nodes if gg == g] for g in GRAPHS}
            techniques = {g: {n: t for (gg, n), t in chosen.items() if gg == g} for g in GRAPHS}
            table = replace(table, excluded_nodes=excluded, node_techniques=techniques)
            table_path = Path(tmp) / f"table-{len(steps)}.json"
            table.save(table_path)
            tables.append(table)
            int8 = WhisperModel(
                checkpoint, RuntimeOptions(precision="int8", threads=config.threads, range_table=table_path)
            )
            int8_reports = evaluate_conditions(int8, config.conditions, f"INT8 step {len(steps)}")
            results = tuple(compare(c, fp32_reports[c.name], int8_reports[c.name]) for c in config.conditions)
            integer_share, wide_share = mac_shares(checkpoint, table, nodes)
            step = GateStep(
                tuple(n for _, n in float_nodes),
                integer_share,
                results,
                tuple((n, t) for (_, n), t in chosen.items()),
                wide_share,
            )
            steps.append(step)
            log(
                f"  {len(chosen):2d} nodes finer, {len(float_nodes):2d} float, {step.int8_mac_share:6.1%} of MACs "
                "integer: " + "; ".join(f"{r.name} Δ {r.delta:+.2f} QoI {r.qoi:.0%}" for r in results)
            )
            best = _best(steps)
            stalled = len(steps) - 1 - best >= config.patience
            if (step.passed and step.delta <= config.target_delta) or not config.mixed_precision or stalled:
                break
            if not order:  # the first failure: rank nodes now (slow), so a build that passes never pays for it
                log("ranking node sensitivity on calibration inputs")
                ranked = rank_sensitivity(checkpoint, table, nodes, ranking_feeds)
                order = sorted(
                    (
                        (s.sqnr_db, graph, s.node)
                        for graph, ranking in ranked.items()
                        for s in ranking
                        if not (config.recipe.scheme == "dynamic" and s.node in KEPT_INTEGER)
                    ),
                    key=lambda t: t[0],
                )
            moved = _next_moves(checkpoint, table, nodes, ranking_feeds, order, chosen, float_nodes, config, measured)
            if not moved:
                break
    best = _best(steps)
    table = tables[best]
    for i, tried in enumerate(tables):
        if i != best:
            shutil.rmtree(int8_dir(checkpoint, tried), ignore_errors=True)
    seconds = sum(c["seconds"] for c in table.calibration)
    feeds = _validation_feeds(fp32, config.conditions[0].entries)
    return QuantizationResult(
        table, fp32_reports, steps, ranked, nodes, config.conditions, seconds, feeds, measured, best
    )


def _next_moves(
    checkpoint: WhisperCheckpoint,
    table: RangeTable,
    nodes: dict[str, list[ComputeNode]],
    feeds: dict[str, list[Feed]],
    order: list[tuple[float, str, str]],
    chosen: dict[tuple[str, str], str],
    float_nodes: list[tuple[str, str]],
    config: QuantizeConfig,
    measured: dict[str, dict[str, dict[str, float]]],
) -> int:
    """Move the worst nodes one rung up, in place: a finer integer form first (dynamic scheme:
    per-token scales or 16-bit activations, whichever measured better alone on calibration inputs),
    float only once every node that has one was given it. Each technique's SQNR goes into
    ``measured``. Returns how many nodes moved."""
    op_types = {(g, n.name): n.op_type for g in GRAPHS for n in nodes[g]}
    if config.recipe.scheme == "dynamic":
        finer = [(g, n) for _, g, n in order if (g, n) not in chosen and op_types[(g, n)] == "MatMul"][
            : config.group_size
        ]
        for graph, name in finer:
            node = next(n for n in nodes[graph] if n.name == name)
            sqnr = {
                technique: isolated_sensitivity(
                    float_graph(checkpoint, graph), table.recipe, {}, [node], feeds[graph], technique=technique
                )[0].sqnr_db
                for technique in TECHNIQUES
            }
            chosen[(graph, name)] = choose_technique(sqnr)
            measured[graph][name] = sqnr
        if finer:
            return len(finer)
    to_float = [(g, n) for _, g, n in order if (g, n) not in float_nodes][: config.group_size]
    for key in to_float:
        chosen.pop(key, None)
    float_nodes += to_float
    return len(to_float)


def _best(steps: list[GateStep]) -> int:
    """The attempt closest to passing; among equals, the one with fewest float nodes (earliest)."""
    return min(range(len(steps)), key=lambda i: (steps[i].shortfall, steps[i].delta if steps[i].passed else 0, i))
