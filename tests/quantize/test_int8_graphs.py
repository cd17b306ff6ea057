"""The shipped INT8 builds: what the reports count as integer really is (QDQ in the static OpenVINO
flavour, integer kernels in the dynamic CPU one), sizes, agreement with FP32."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from amanuensis import export
from amanuensis.audio import load_audio, log_mel_spectrogram, pad_or_trim
from amanuensis.engine import WhisperModel
from amanuensis.evaluation import word_error_rate
from amanuensis.export import GraphKind
from amanuensis.export.graph_index import GraphIndex
from amanuensis.quantize import build_int8_graph, committed_table_path, load_table
from amanuensis.quantize.analysis import compute_nodes, int8_node_names
from amanuensis.quantize.recipe import QuantRecipe
from amanuensis.quantize.report import MAX_SIZE_RATIO
from amanuensis.runtime import ENCODER_QUERY_CHUNKS, Encoder, RuntimeOptions

from ..conftest import ROOT, SAMPLE, SAMPLE_REFERENCE, sqnr_db

REPORT = ROOT / "models/tiny.en/quantization_report.openvino.json"  # the static QDQ flavour's
DYNAMIC_REPORT = ROOT / "models/tiny.en/quantization_report.json"  # the CPU flavour's
QNN_REPORT = ROOT / "models/tiny.en/quantization_report.qnn.json"
MIN_ENCODER_SQNR_DB = 12.0  # cross K/V of the INT8 encoder vs FP32 on a validation window
GRAPHS = ("encoder", "decoder")


def _static_table(tiny):
    return load_table(tiny.checkpoint, committed_table_path("tiny.en", "openvino"), "openvino")


@pytest.fixture(scope="module")
def int8_graphs(tiny) -> dict[str, onnx.ModelProto]:
    table = _static_table(tiny)
    return {g: onnx.load(str(build_int8_graph(tiny.checkpoint, table, g))) for g in GRAPHS}


@pytest.fixture(scope="module")
def float_score_graphs(tiny, tmp_path_factory) -> dict[str, onnx.ModelProto]:
    """The static CPU flavour (``--scheme static``, the target with float scores), ranges from the
    windows and decoder steps of one calibration clip."""
    from amanuensis.quantize.calibration import compute_ranges, find_calibration_clips, record_inputs
    from amanuensis.quantize.qdq import build_qdq

    from ..conftest import CALIBRATION_DIR

    recipe = QuantRecipe(target="cpu", scheme="static")
    recorded = record_inputs(tiny, find_calibration_clips(CALIBRATION_DIR)[:1], ROOT)
    sources = {
        "encoder": (export.graph_path(tiny.checkpoint, GraphKind.ENCODER), recorded.encoder_feeds()),
        "decoder": (export.graph_path(tiny.checkpoint, GraphKind.DECODER, 1), recorded.decoder_feeds()),
    }
    graphs = {}
    for graph, (source, feeds) in sources.items():
        path = tmp_path_factory.mktemp("float-scores") / f"{graph}.onnx"
        build_qdq(source, path, recipe, compute_ranges(source, feeds, recipe))
        graphs[graph] = onnx.load(str(path))
    return graphs


@pytest.fixture(scope="module")
def dynamic_graphs(tiny) -> dict[str, onnx.ModelProto]:
    table = load_table(tiny.checkpoint)
    assert table.recipe.scheme == "dynamic"
    return {g: onnx.load(str(build_int8_graph(tiny.checkpoint, table, g))) for g in GRAPHS}


@pytest.fixture(scope="module")
def report() -> dict:
    return json.loads(REPORT.read_text())


@pytest.fixture(scope="module")
def dynamic_report() -> dict:
    return json.loads(DYNAMIC_REPORT.read_text())


@pytest.mark.parametrize("graph", GRAPHS)
def test_every_node_counted_integer_runs_on_quantized_inputs(dynamic_graphs, dynamic_report, graph: str) -> None:
    """The CPU flavour's count: each node it calls integer is an integer kernel whose operands are
    8-bit (quantized at run time, or stored as int8), and nothing else is counted."""
    model = dynamic_graphs[graph]
    index = GraphIndex(model.graph)
    counted = set(dynamic_report["graphs"][graph]["int8_nodes"])
    assert counted == int8_node_names(model) and counted
    kernels = [n for n in model.graph.node if n.op_type in ("MatMulInteger", "ConvInteger")]
    sources = {k.name.removesuffix("_quant").removesuffix("/residual").split("/chunk")[0] for k in kernels}
    assert sources == counted
    for kernel in kernels:
        for name in kernel.input[:2]:
            producer = index.producer.get(name)
            if producer is not None and producer.op_type == "Transpose":  # the shared int8 embedding table
                name = producer.input[0]
            if name in index.initializers:
                assert numpy_helper.to_array(index.initializers[name]).dtype in (np.int8, np.uint8), kernel.name
            elif index.producer[name].op_type == "QuantizeLinear":  # per-row scales (quantize.per_row)
                zero_point = index.initializers[index.producer[name].input[2]]
                assert zero_point.data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8), kernel.name
            else:
                assert index.producer[name].op_type == "DynamicQuantizeLinear", kernel.name
    floats = {n.name for n in model.graph.node if n.op_type in ("MatMul", "Gemm", "Conv")}
    assert not floats & counted


def test_dynamic_attention_weights_are_unnormalized(tiny, dynamic_graphs) -> None:
    """The encoder's attention weights reach their integer product as exp(s − max s), whose rows
    peak at exactly 1, never as softmax probabilities; only a product the table keeps float reads
    them in float, and one given 16-bit limbs reads them through its per-row scale."""
    model = dynamic_graphs["encoder"]
    assert not [n for n in model.graph.node if n.op_type == "Softmax"]
    index = GraphIndex(model.graph)
    table = load_table(tiny.checkpoint)
    kept_float = set(table.excluded_nodes.get("encoder", []))
    finer = table.node_techniques.get("encoder", {})
    exps = [n for n in model.graph.node if n.op_type == "Exp"]
    assert len(exps) == tiny.checkpoint.dims.n_audio_layer * ENCODER_QUERY_CHUNKS
    for exp in exps:
        readers = index.users(exp.output[0])
        assert "ReduceSum" in {u.op_type for u in readers}, exp.name
        product = next(u for u in readers if u.op_type != "ReduceSum")
        if product.op_type == "MatMul":
            assert product.name.split("/chunk")[0] in kept_float, product.name
            continue
        # quantized with the fixed step 1/255 (rows peak at exactly 1), by itself or as the high
        # limb of a node the table gives 16-bit activations (whose residual is read by a Sub)
        assert product.op_type == "QuantizeLinear", exp.name
        assert numpy_helper.to_array(index.initializers[product.input[1]]) == np.float32(1 / 255), exp.name
        subs = [u for u in readers if u.op_type == "Sub"]
        assert not subs or subs[0].name.split("/chunk")[0] in finer, exp.name


@pytest.mark.parametrize("graph", GRAPHS)
def test_every_node_counted_int8_has_qdq_on_its_inputs(int8_graphs, report, graph: str) -> None:
    model = int8_graphs[graph]
    producers = {out: node for node in model.graph.node for out in node.output}
    initializers = {i.name: i for i in model.graph.initializer}
    counted = set(report["graphs"][graph]["int8_nodes"])
    assert counted == int8_node_names(model) and counted
    for node in model.graph.node:
        if node.name not in counted:
            continue
        activation, weight = (producers[i] for i in node.input[:2])
        assert activation.op_type == "DequantizeLinear" and weight.op_type == "DequantizeLinear", node.name
        # The activation is quantized in the graph (Q→DQ); a weight is stored as 8-bit integers
        # (int8; the embedding shared by Gather and the logits Gemm gets uint8 from onnxruntime).
        if weight.input[0] in initializers:
            assert numpy_helper.to_array(initializers[weight.input[0]]).dtype in (np.int8, np.uint8), node.name
        else:
            assert producers[weight.input[0]].op_type == "QuantizeLinear", node.name
        assert producers[activation.input[0]].op_type == "QuantizeLinear", node.name


# Query × key MatMuls as the exporter names them: the encoder's one per layer; the decoder's
# cached-keys and new-key scores of self-attention and its cross-attention scores.
SCORE_MATMULS = {
    "encoder": ("self_attention/MatMul",),
    "decoder": ("self_attention/MatMul", "self_attention/MatMul_1", "attention/MatMul"),
}


@pytest.mark.parametrize("graph", GRAPHS)
def test_attention_scores_reach_the_softmax_in_float(tiny, float_score_graphs, graph: str) -> None:
    """Every query × key MatMul takes 8-bit inputs and gives float scores: no QuantizeLinear
    between it and its softmax. The attention contexts (probabilities × values) keep their output
    quantization, so the change is confined to the scores."""
    model = float_score_graphs[graph]
    index = GraphIndex(model.graph)
    producers = index.producer

    def consumers(name: str) -> list[str]:
        return [node.op_type for node in index.users(name)]

    layers = tiny.checkpoint.dims.n_audio_layer if graph == "encoder" else tiny.checkpoint.dims.n_text_layer
    pattern = re.compile(rf"{graph}/layer_\d+/({'|'.join(SCORE_MATMULS[graph])})$")
    scores = [n for n in model.graph.node if n.op_type == "MatMul" and pattern.search(n.name)]
    assert len(scores) == layers * len(SCORE_MATMULS[graph])
    for node in scores:
        assert all(producers[i].op_type == "DequantizeLinear" for i in node.input), node.name
        assert consumers(node.output[0]) and "QuantizeLinear" not in consumers(node.output[0]), node.name
    contexts = [
        n
        for n in model.graph.node
        if n.op_type == "MatMul"
        and n not in scores
        and "attention/MatMul" in n.name
        and all(producers[i].op_type == "DequantizeLinear" for i in n.input if i in producers)
    ]
    assert contexts
    assert all("QuantizeLinear" in consumers(n.output[0]) for n in contexts)


@pytest.mark.parametrize("graph", GRAPHS)
def test_nodes_kept_float_are_float(tiny, int8_graphs, report, graph: str) -> None:
    table = _static_table(tiny)
    assert report["graphs"][graph]["float_nodes"] == [
        n.name
        for n in compute_nodes(
            onnx.load(
                str(
                    export.graph_path(tiny.checkpoint, GraphKind.ENCODER)
                    if graph == "encoder"
                    else export.graph_path(tiny.checkpoint, GraphKind.DECODER, 1)
                )
            )
        )
        if n.name not in int8_node_names(int8_graphs[graph])
    ]
    assert set(table.excluded_nodes.get(graph, [])) <= set(report["graphs"][graph]["float_nodes"])


def _int8_bytes(tiny, flavour: str) -> tuple[int, int]:
    """(INT8, FP32) bytes of the encoder and the decoder step built from the shipped table."""
    table = load_table(tiny.checkpoint, committed_table_path("tiny.en", flavour), flavour)
    fp32 = (
        export.graph_path(tiny.checkpoint, GraphKind.ENCODER).stat().st_size
        + export.graph_path(tiny.checkpoint, GraphKind.DECODER, 1).stat().st_size
    )
    return sum(build_int8_graph(tiny.checkpoint, table, g).stat().st_size for g in GRAPHS), fp32


def test_int8_is_at_most_thirty_percent_of_fp32_bytes(tiny) -> None:
    int8, fp32 = _int8_bytes(tiny, "cpu")
    assert int8 <= MAX_SIZE_RATIO * fp32, f"INT8 {int8} bytes vs FP32 {fp32}"


def test_report_and_table_agree(tiny, report) -> None:
    """The static report states the shipped table's own build (its size is over MAX_SIZE_RATIO:
    products kept float keep float weights, the tied embedding among them; docs/quantization.md)."""
    table = _static_table(tiny)
    assert report["weights_digest"] == table.weights_digest == tiny.checkpoint.digest
    assert QuantRecipe(**report["recipe"]) == table.recipe
    assert report["sizes"]["int8_bytes"] / report["sizes"]["fp32_bytes"] == pytest.approx(report["sizes"]["ratio"])
    assert report["sizes"]["ratio"] == pytest.approx(_int8_bytes(tiny, "openvino")[0] / report["sizes"]["fp32_bytes"])
    assert 0.5 < report["int8_mac_share"] <= 1.0


def test_dynamic_report_names_the_shipped_table(tiny, dynamic_report) -> None:
    table = load_table(tiny.checkpoint)
    assert dynamic_report["weights_digest"] == table.weights_digest == tiny.checkpoint.digest
    assert QuantRecipe(**dynamic_report["recipe"]) == table.recipe
    float_nodes = {n for g in GRAPHS for n in dynamic_report["graphs"][g]["float_nodes"]}
    assert {n for nodes in table.excluded_nodes.values() for n in nodes} <= float_nodes
    for graph in GRAPHS:
        assert dynamic_report["graphs"][graph]["techniques"] == table.node_techniques.get(graph, {})


@pytest.mark.parametrize("report", [DYNAMIC_REPORT, QNN_REPORT, REPORT], ids=["cpu", "qnn", "openvino"])
def test_report_page_is_rendered_from_its_json(report: Path) -> None:
    """A shipped report's page says what its JSON holds, as the current renderer writes it (the
    vitisai report predates the per-condition gate and is kept as written)."""
    from amanuensis.quantize.report import render_markdown

    page = render_markdown(json.loads(report.read_text()))
    assert page == report.with_suffix(".md").read_text()


def test_int8_encoder_tracks_fp32(tiny, validation) -> None:
    window = pad_or_trim(log_mel_spectrogram(load_audio(validation[0].audio).samples, 80), 3000)
    fp32 = tiny.runtime.encoder(window)
    int8 = Encoder(
        build_int8_graph(tiny.checkpoint, _static_table(tiny), "encoder"),
        tiny.checkpoint.dims,
        RuntimeOptions(threads=2),
    )(window)
    for name, reference in fp32.items():
        sqnr = sqnr_db(reference, int8[name])
        assert sqnr > MIN_ENCODER_SQNR_DB, f"{name}: {sqnr:.1f} dB"


def test_int8_transcribes_the_sample(tiny) -> None:
    model = WhisperModel(tiny.checkpoint, RuntimeOptions(precision="int8", threads=2))
    text = model.transcribe_all(SAMPLE).text
    assert word_error_rate([SAMPLE_REFERENCE], [text]) < 5.0, text
