"""Calibrated INT8 (QDQ) versions of the exported graphs.

A committed range table (``tables/<model>.json``, produced by ``amanuensis quantize``) holds the
recipe, the calibration clips and every activation range; the INT8 graphs are built from it on
first use and cached next to the FP32 graphs.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from amanuensis import export
from amanuensis.errors import UserError
from amanuensis.export import GRAPH_SPECS, GraphKind
from amanuensis.export.cache import VERSIONS, is_complete, writable_folder
from amanuensis.models import WhisperCheckpoint
from amanuensis.quantize import kernels
from amanuensis.quantize.recipe import QuantRecipe, RangeTable

TABLES_DIR = Path(__file__).parent / "tables"
GRAPHS = (GraphKind.ENCODER, GraphKind.DECODER)  # the graphs a range table covers

__all__ = [
    "GRAPHS",
    "TABLES_DIR",
    "QuantRecipe",
    "QuantizationUnavailable",
    "RangeTable",
    "build_int8_graph",
    "committed_table_path",
    "find_table",
    "float_source",
    "int8_graph_path",
    "int8_graph_paths",
    "load_table",
    "missing_int8_graphs",
    "prepare_int8",
    "user_table_path",
]


class QuantizationUnavailable(UserError, RuntimeError):
    """No usable range table for this model: INT8 cannot be built without calibrating first."""


def table_file_name(model_name: str, target: str = "cpu") -> str:
    """``tiny.en.json`` for the CPU flavour, ``tiny.en.qnn.json`` for another target's."""
    return f"{model_name}.json" if target == "cpu" else f"{model_name}.{target}.json"


def committed_table_path(model_name: str, target: str = "cpu") -> Path:
    """Range table shipped with the package (made by the maintainers' ``amanuensis quantize``)."""
    return TABLES_DIR / table_file_name(model_name, target)


def user_table_path(model_name: str, target: str = "cpu") -> Path:
    """Where ``amanuensis quantize`` writes a table by default; preferred over the shipped one."""
    return export.cache_root() / "tables" / table_file_name(model_name, target)


def find_table(model_name: str, target: str = "cpu") -> Path | None:
    for path in (user_table_path(model_name, target), committed_table_path(model_name, target)):
        if path.is_file():
            return path
    return None


def load_table(checkpoint: WhisperCheckpoint, path: Path | None = None, target: str = "cpu") -> RangeTable:
    """The range table for these weights: ``path``, else the user's, else the shipped one."""
    path = path or find_table(checkpoint.files.name, target)
    if path is None or not path.is_file():
        raise QuantizationUnavailable(
            f"no INT8 calibration for model {checkpoint.files.name!r} (target {target}); run `amanuensis quantize "
            f"--model {checkpoint.files.name} --target {target}` first, or use --precision fp32"
        )
    table = RangeTable.load(path)
    if table.weights_digest != checkpoint.digest:
        raise QuantizationUnavailable(f"{path} was calibrated for other weights than {checkpoint.files.name!r}")
    if table.export_version != export.VERSIONS["export"]:
        raise QuantizationUnavailable(f"{path} was calibrated on graphs of an older export; re-run quantize")
    return table


INT8_DIR_PREFIX = "int8-"  # INT8 builds live in <model cache>/int8-<table fingerprint>-b<VERSIONS["int8_build"]>/


def int8_dir(checkpoint: WhisperCheckpoint, table: RangeTable) -> Path:
    """The build folder of one table; the CPU flavour's is also keyed by the weight type this
    machine's kernels compute exactly (``kernels.weight_storage``), so a cache moved between CPUs
    stays right."""
    name = f"{INT8_DIR_PREFIX}{table.fingerprint()}-b{VERSIONS['int8_build']}"
    if table.recipe.scheme == "dynamic" and kernels.weight_storage() != kernels.SIGNED:
        name += f"-{kernels.weight_storage()}"
    return export.model_cache_dir(checkpoint) / name


def float_source(graph_path: Path) -> Path:
    """The FP32 export a graph file was built from: itself, or for an INT8 build the same file name
    in the model cache folder above it."""
    if graph_path.parent.name.startswith(INT8_DIR_PREFIX):
        return graph_path.parent.parent / graph_path.name
    return graph_path


def int8_graph_path(directory: Path, graph: GraphKind, batch: int = 1) -> Path:
    """File name of one INT8 graph inside a build folder (the FP32 graph's name)."""
    if graph not in (*GRAPHS, GraphKind.PREFILL):
        raise ValueError(f"no INT8 build of the {graph} graph")
    return directory / GRAPH_SPECS[graph].file_name(batch)


def _table_key(graph: GraphKind) -> GraphKind:
    """The range-table entry a graph is built from: the prefill block is the decoder step with more
    tokens, node for node, so it takes the decoder's choices."""
    return GraphKind.DECODER if graph == GraphKind.PREFILL else graph


def build_int8_graph(
    checkpoint: WhisperCheckpoint, table: RangeTable, graph: GraphKind, batch: int = 1, directory: Path | None = None
) -> Path:
    """Path of one INT8 graph, built from the table's ranges if it is not there yet."""
    path = int8_graph_path(directory or int8_dir(checkpoint, table), graph, batch)
    if is_complete(path):
        return path
    writable_folder(path.parent)
    source = export.graph_path(checkpoint, graph, batch)
    excluded = table.excluded_nodes.get(_table_key(graph), [])
    if table.recipe.scheme == "dynamic":
        from amanuensis.quantize.dynamic import build_dynamic

        # Only the CPU EP runs this flavour, so the encoder is query-chunked here, before the
        # attention rewrite removes the Softmax the runtime's own chunking looks for.
        chunks = export.ENCODER_QUERY_CHUNKS if graph == GraphKind.ENCODER else 1
        techniques = table.node_techniques.get(_table_key(graph), {})
        build_dynamic(source, path, table.recipe, excluded, query_chunks=chunks, techniques=techniques)
    else:
        import tempfile

        from amanuensis.quantize.qdq import build_qdq
        from amanuensis.quantize.split import table_rewrite

        with tempfile.TemporaryDirectory(dir=path.parent, prefix=".rewrite-") as tmp:
            rewritten = table_rewrite(source, table, _table_key(graph), Path(tmp))
            build_qdq(rewritten, path, table.recipe, table.ranges[graph], excluded)
    return path


def _wanted(batches: tuple[int, ...]) -> list[tuple[GraphKind, int]]:
    """(graph, batch) of every INT8 graph a run with these beam widths opens."""
    return [(GraphKind.ENCODER, 1), *((GraphKind.DECODER, b) for b in batches)]


def missing_int8_graphs(checkpoint: WhisperCheckpoint, table: RangeTable, batches: tuple[int, ...]) -> int:
    """How many INT8 graphs still have to be built (0 once cached)."""
    directory = int8_dir(checkpoint, table)
    return sum(not is_complete(int8_graph_path(directory, graph, batch)) for graph, batch in _wanted(batches))


def prepare_int8(
    checkpoint: WhisperCheckpoint,
    table: RangeTable,
    batches: tuple[int, ...],
    on_graph: Callable[[], None] | None = None,
) -> None:
    """Build (once) the INT8 encoder and decoder steps for these beam widths."""
    for graph, batch in _wanted(batches):
        build_int8_graph(checkpoint, table, graph, batch)
        if on_graph:
            on_graph()


def int8_graph_paths(
    checkpoint: WhisperCheckpoint, table_path: Path | None = None
) -> tuple[Callable[[], Path], Callable[[int], Path], Callable[[int], Path] | None]:
    """Encoder, decoder-step and prompt-prefill path getters for the runtime; the table is read
    once, here (the runtime passes the one amanuensis.precision chose for where the graphs run).

    Only the run-time-scale (CPU) flavour has a prefill block. With fixed scales the step keeps its
    cache in 8 bits, and inside a block the prompt's keys and values would skip that quantization:
    it measured worse (gate WER 14.88 → 15.14 %, the static flavour, 2026-11-24).
    """
    table = load_table(checkpoint, table_path)
    prefill = None
    if table.recipe.scheme == "dynamic":
        prefill = lambda tokens: build_int8_graph(checkpoint, table, GraphKind.PREFILL, tokens)  # noqa: E731
    return (
        lambda: build_int8_graph(checkpoint, table, GraphKind.ENCODER),
        lambda batch: build_int8_graph(checkpoint, table, GraphKind.DECODER, batch),
        prefill,
    )
