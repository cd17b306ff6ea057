"""The quantization report: a Markdown page a person can read, the same facts as JSON, and a plot."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import onnx

from amanuensis import export
from amanuensis.conditions import QOI_MIN
from amanuensis.export import GraphKind
from amanuensis.models import WhisperCheckpoint
from amanuensis.quantize import GRAPHS, build_int8_graph
from amanuensis.quantize.analysis import TensorError, activation_errors, int8_node_names, quant_params
from amanuensis.quantize.pipeline import QuantizationResult, float_graph, sixteen_bit_nodes, table_graph
from amanuensis.quantize.targets import get_target
from amanuensis.runtime import Feed

MAX_SIZE_RATIO = 0.30  # INT8 bytes may be at most this share of FP32 bytes
ERROR_FEEDS = {
    GraphKind.ENCODER: 1,
    GraphKind.DECODER: 12,
}  # runs per graph for per-tensor errors (every tensor is kept in memory)


def _graph_facts(
    checkpoint: WhisperCheckpoint, result: QuantizationResult, feeds: dict[str, list[Feed]]
) -> dict[str, dict]:
    facts = {}
    with tempfile.TemporaryDirectory(prefix="amanuensis-report-") as tmp:
        rewritten = Path(tmp)
        for graph in GRAPHS:
            fp32_path = float_graph(checkpoint, graph)
            # tensors are compared with the float graph the build started from (splits, smoothing folded in)
            reference = table_graph(checkpoint, result.table, graph, rewritten)
            int8_path = build_int8_graph(checkpoint, result.table, graph)
            built = onnx.load(str(int8_path))
            int8_names = int8_node_names(built)
            nodes = result.nodes[graph]
            total = sum(n.macs for n in nodes)
            errors: list[TensorError] = (
                []  # no calibrated ranges to measure against: every scale is the tensor's own at run time
                if result.table.recipe.scheme == "dynamic"
                else activation_errors(
                    reference, int8_path, feeds[graph][: ERROR_FEEDS[graph]], result.table.ranges[graph]
                )
            )
            by_tensor = {e.tensor: e for e in errors}
            int8_macs = sum(n.macs for n in nodes if n.name in int8_names)
            wide = sixteen_bit_nodes(result.table, graph, int8_names)
            a16_macs = sum(n.macs for n in nodes if n.name in wide)
            facts[graph] = {
                "fp32_bytes": fp32_path.stat().st_size,
                "int8_bytes": int8_path.stat().st_size,
                "macs": total,
                "int8_macs": int8_macs,
                "mac_shares": {
                    "W8A8": (int8_macs - a16_macs) / total,
                    "W8A16": a16_macs / total,
                    "float": 1 - int8_macs / total,
                },
                "techniques": result.table.node_techniques.get(graph, {}),
                "int8_nodes": sorted(int8_names),
                "float_nodes": [n.name for n in nodes if n.name not in int8_names],
                "activations": [
                    {
                        "tensor": p.tensor,
                        "scale": p.scale,
                        "zero_point": p.zero_point,
                        "dtype": p.dtype,
                        "range": list(result.table.ranges.get(graph, {}).get(p.tensor, (None, None))),
                        "clip_rate": by_tensor[p.tensor].clip_rate if p.tensor in by_tensor else None,
                        "qdq_sqnr_db": by_tensor[p.tensor].qdq_sqnr_db if p.tensor in by_tensor else None,
                        "model_sqnr_db": by_tensor[p.tensor].model_sqnr_db if p.tensor in by_tensor else None,
                    }
                    for p in quant_params(built)
                ],
            }
    return facts


def build_report(
    checkpoint: WhisperCheckpoint, result: QuantizationResult, feeds: dict[str, list[Feed]], comparison: list[dict]
) -> dict:
    graphs = _graph_facts(checkpoint, result, feeds)
    fp32_bytes = sum(g["fp32_bytes"] for g in graphs.values())
    int8_bytes = sum(g["int8_bytes"] for g in graphs.values())
    final = result.final
    return {
        "model": checkpoint.files.name,
        "weights_digest": checkpoint.digest,
        "export_version": export.VERSIONS["export"],
        "recipe": result.table.to_dict()["recipe"],
        "recipe_description": result.table.recipe.describe(),
        "calibration": {"clips": len(result.table.calibration), "seconds": result.calibration_seconds},
        "validation_utterances": result.validation_utterances,
        "gate": {
            "decoding": "greedy (beam 1), temperature fallback as in transcribe",
            "fp32_wer": result.fp32_wer,
            "int8_wer": final.wer,
            "delta": final.delta,
            "max_delta": final.results[0].max_delta,
            "qoi_min": QOI_MIN,
            "passed": result.passed,
            "conditions": [
                {**r.to_dict(), "description": c.description}
                for r, c in zip(final.results, result.conditions, strict=True)
            ],
        },
        "mixed_precision_steps": [
            {
                "float_nodes": list(s.float_nodes),
                "techniques": dict(s.techniques),
                "int8_mac_share": s.int8_mac_share,
                "a16_mac_share": s.a16_mac_share,
                "wer": s.wer,
                "delta": s.delta,
                "conditions": [r.to_dict() for r in s.results],
            }
            for s in result.steps
        ],
        "int8_mac_share": final.int8_mac_share,
        "mac_shares": {
            "W8A8": final.int8_mac_share - final.a16_mac_share,
            "W8A16": final.a16_mac_share,
            "float": 1 - final.int8_mac_share,
        },
        "sizes": {"fp32_bytes": fp32_bytes, "int8_bytes": int8_bytes, "ratio": int8_bytes / fp32_bytes},
        "sensitivity": {
            g: [{"node": s.node, "op_type": s.op_type, "macs": s.macs, "sqnr_db": s.sqnr_db} for s in ranking]
            for g, ranking in result.sensitivity.items()
        },
        "graphs": graphs,
        "technique_sqnr": result.technique_sqnr,
        "recipe_comparison": comparison,
    }


def _placement_sentence(recipe: dict) -> str:
    """Where Q/DQ goes for the recipe's target, and what stays float by construction."""
    if recipe.get("scheme") == "dynamic":
        return (
            "onnxruntime `quantize_dynamic` on every MatMul and Gemm, the attention products included: each "
            "activation is quantized to uint8 with its own range at run time, so no calibrated range can be "
            "exceeded. Attention multiplies the unnormalized weights exp(s − max s) with V and divides by their "
            "sum afterwards, which makes every row's largest weight exactly 1 (a per-row scale in effect). Nodes "
            "the search moved to a finer integer form (listed under Mixed precision) get one scale per row "
            "(per_token) or 16-bit activations as two 8-bit limbs, each an integer product (a16).\n"
            "- Float by construction: the two Convs (as ConvInteger they made every condition worse), "
            "LayerNorm, the softmax's exp and sums, GELU, the residual Adds."
        )
    if get_target(recipe["target"]).quantized_op_types is None:
        return (
            "Static QDQ (onnxruntime `quantize_static` with its QNN configuration) on the inputs and outputs "
            "of every op: the whole graph in fixed point, as the HTP wants (GELU fused into one op first, "
            "MatMul + Add fused into Gemm). Nothing is float by construction. The masked attention scores "
            "and the mask get ranges that end 16 below the lowest real score instead of at the −10⁴ mask "
            "value, so a masked score saturates where the softmax gives it no weight (`quantize.masked_ranges`)."
        )
    return (
        "Static QDQ (onnxruntime `quantize_static`) on MatMul, Conv and Gemm inputs, and on Gather so the "
        "embedding tables are stored as int8.\n- Float by construction: LayerNorm, Softmax, GELU (Erf), the "
        "residual Adds and the additive attention mask (a −10⁴ mask value would swamp any 8-bit scale). Their "
        "inputs and outputs are quantized only where a quantized MatMul consumes them."
        + (
            " Attention scores (8-bit query × 8-bit key) reach the softmax in float, not requantized to 8 bits."
            if get_target(recipe["target"]).float_scores
            else ""
        )
        + (
            " Attention multiplies the unnormalized weights exp(s − max s) (8-bit, scale 1/255: each row's "
            "largest weight is exactly 1) with V and divides by their row sums in float afterwards "
            "(`quantize.unnormalized`); the softmax's exp and sums are float."
            if get_target(recipe["target"]).unnormalized_attention
            else ""
        )
    )


def _widths(recipe: dict) -> str:
    if recipe.get("scheme") == "dynamic":
        return "8-bit weights, 8-bit activations with run-time scales"
    return f"8-bit weights, {recipe['activation_bits']}-bit activations"


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def render_markdown(report: dict) -> str:
    gate, sizes = report["gate"], report["sizes"]
    verdict = "passes" if gate["passed"] else "FAILS"
    lines = [
        f"# INT8 quantization report: {report['model']}",
        "",
        "Written by `amanuensis quantize`; every figure below was measured in that run.",
        "",
        "## Result",
        "",
        f"Gate: on every condition Δ WER at most its limit and QoI (clips INT8 did not make worse) at least "
        f"{gate['qoi_min']:.0%}. Overall: **{verdict}**.",
        "",
        "| condition | clips | FP32 WER | INT8 WER | Δ (points) | limit | QoI | |",
        "|---|---|---|---|---|---|---|---|",
        *(
            f"| {c['condition']}: {c['description']} | {c['clips']} | {c['fp32_wer']:.2f} % | {c['int8_wer']:.2f} % "
            f"| {c['delta']:+.2f} | {c['max_delta']} | {c['qoi']:.1%} | {'passes' if c['passed'] else '**fails**'} |"
            for c in gate["conditions"]
        ),
        "",
        f"- Recipe: {report['recipe_description']}. {_placement_sentence(report['recipe'])}",
        f"- Calibration: {report['calibration']['clips']} clips, {report['calibration']['seconds'] / 60:.1f} min "
        "of real read speech from `calibration_audio/`, half of them clean and half the same recordings mixed "
        "with its real noise recordings at 0–20 dB SNR (no validation speaker, utterance or noise recording); "
        "every encoder window and every "
        "decoder step visited while transcribing them greedily with the FP32 model"
        + (
            " (the dynamic scheme calibrates no range: these clips only rank node sensitivity)."
            if report["recipe"].get("scheme") == "dynamic"
            else "."
        ),
        f"- Gate decoding: {gate['decoding']}.",
        f"- MACs in integer kernels ({_widths(report['recipe'])}; one encoder window + one decoder step): "
        f"**{report['int8_mac_share']:.1%}** ("
        + ", ".join(f"{g} {f['int8_macs'] / f['macs']:.1%}" for g, f in report["graphs"].items())
        + "; the rest float, by name below). By width:",
        "",
        "| graph | W8A8 | W8A16 | float |",
        "|---|---|---|---|",
        *(
            f"| {g} | {f['mac_shares']['W8A8']:.1%} | {f['mac_shares']['W8A16']:.1%} | {f['mac_shares']['float']:.1%} |"
            for g, f in report["graphs"].items()
            if "mac_shares" in f
        ),
        *(
            [
                f"| both (MAC-weighted) | {report['mac_shares']['W8A8']:.1%} | {report['mac_shares']['W8A16']:.1%} "
                f"| {report['mac_shares']['float']:.1%} |"
            ]
            if "mac_shares" in report
            else []
        ),
        "",
        f"- Size: FP32 {_mb(sizes['fp32_bytes'])} → INT8 {_mb(sizes['int8_bytes'])} "
        f"(**{sizes['ratio']:.1%}**; limit {MAX_SIZE_RATIO:.0%})"
        + (f"; {report['sizes_note']}." if report.get("sizes_note") else "."),
        "",
        "## Mixed precision",
        "",
        "Nodes are ranked by the SQNR of the graph's outputs when that node alone is quantized (calibration "
        "inputs, clean and noisy). While INT8 fails a condition, the worst remaining nodes move one rung up, a "
        "group at a time: for the dynamic scheme first to a finer integer form (per-token activation scales, or "
        "16-bit activations as two 8-bit limbs when that measured more than one bit better alone), and back "
        "to float only once every MatMul has had its finer form.",
        "",
        "| step | nodes finer | nodes float | MACs integer (of which A16) | "
        + " | ".join(f"{c['condition']} Δ / QoI" for c in gate["conditions"])
        + " |",
        "|---|---|---|---|" + "---|" * len(gate["conditions"]),
    ]
    for i, s in enumerate(report["mixed_precision_steps"]):
        cells = " | ".join(f"{c['delta']:+.2f} / {c['qoi']:.0%}" for c in s["conditions"])
        shares = f"{s['int8_mac_share']:.1%} ({s.get('a16_mac_share', 0.0):.1%})"
        lines.append(f"| {i} | {len(s.get('techniques', {}))} | {len(s['float_nodes'])} | {shares} | {cells} |")
    finer = [(g, n, t) for g, f in report["graphs"].items() for n, t in f.get("techniques", {}).items()]
    if finer:
        alone = {(s["node"]): s["sqnr_db"] for ranking in report["sensitivity"].values() for s in ranking}
        measured = report.get("technique_sqnr", {})
        lines += [
            "",
            "Finer integer forms, and each form's effect on its own (output SQNR in dB with only that node "
            "quantized so, calibration inputs):",
            "",
            "| graph | node | chosen | per-tensor 8-bit | per_token | a16 |",
            "|---|---|---|---|---|---|",
        ]
        for g, n, t in finer:
            tried = measured.get(g, {}).get(n, {})
            cells = " | ".join(f"{tried[k]:.1f}" if k in tried else "" for k in ("per_token", "a16"))
            base = f"{alone[n]:.1f}" if n in alone else ""
            lines.append(f"| {g} | `{n}` | {t} | {base} | {cells} |")
    lines += ["", "Kept in float:", ""]
    for graph, facts in report["graphs"].items():
        for name in facts["float_nodes"]:
            lines.append(f"- {graph}: `{name}`")
    if report["recipe_comparison"]:
        lines += [
            "",
            "## Recipe comparison",
            "",
            "Same calibration clips, same validation set, same nodes kept float as the shipped recipe.",
            "",
            "| recipe | INT8 WER | Δ vs FP32 |",
            "|---|---|---|",
        ]
        for row in report["recipe_comparison"]:
            if row.get("wer") is None:
                lines.append(f"| {row['recipe']} | failed: {row.get('error', 'unknown error')} | |")
            else:
                lines.append(f"| {row['recipe']} | {row['wer']:.2f} | {row['delta']:+.2f} |")
    lines += ["", "## Node sensitivity (worst 12 per graph)", ""]
    if any(report["sensitivity"].values()):
        lines += ["| graph | node | MMACs | SQNR alone (dB) |", "|---|---|---|---|"]
        for graph, ranking in report["sensitivity"].items():
            for s in ranking[:12]:
                lines.append(f"| {graph} | `{s['node']}` | {s['macs'] / 1e6:.0f} | {s['sqnr_db']:.1f} |")
        if report.get("plot"):
            lines += ["", f"![per-node error]({report['plot']})"]
    else:
        lines.append("Not ranked: the build with every node quantized passed the gate, so none was needed.")
    lines += [
        "",
        "## Activations: scale, zero point, saturation",
        "",
        "Saturation = share of values outside the calibrated range on validation inputs (clipped by INT8). "
        "SQNR of the QDQ pair alone, and of the tensor in the INT8 graph against FP32 (accumulated).",
        "",
        "| graph | tensor | range | scale | zero point | saturated | QDQ SQNR | vs FP32 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for graph, facts in report["graphs"].items():
        for a in facts["activations"]:
            lo, hi = a["range"]
            rng = f"[{lo:.3g}, {hi:.3g}]" if lo is not None else "weight"
            sat = f"{a['clip_rate']:.2e}" if a["clip_rate"] is not None else ""
            q = f"{a['qdq_sqnr_db']:.1f}" if a["qdq_sqnr_db"] is not None else ""
            m = f"{a['model_sqnr_db']:.1f}" if a["model_sqnr_db"] is not None else ""
            lines.append(
                f"| {graph} | `{a['tensor']}` | {rng} | {a['scale']:.4g} | {a['zero_point']} "
                f"({a['dtype']}) | {sat} | {q} | {m} |"
            )
    return "\n".join(lines) + "\n"


def plot_sensitivity(report: dict, path: Path) -> bool:
    """Bar chart of per-node SQNR (graph order), float nodes marked; False if matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(len(GRAPHS), 1, figsize=(14, 8), constrained_layout=True)
    for ax, graph in zip(axes, GRAPHS, strict=True):
        ranking = {s["node"]: s for s in report["sensitivity"][graph]}
        names = [
            n for n in report["graphs"][graph]["int8_nodes"] + report["graphs"][graph]["float_nodes"] if n in ranking
        ]
        names.sort(key=_network_order)
        floats = set(report["graphs"][graph]["float_nodes"])
        values = [ranking[n]["sqnr_db"] for n in names]
        colours = ["tab:red" if n in floats else "tab:blue" for n in names]
        ax.bar(range(len(names)), values, color=colours)
        ax.set_xticks(range(len(names)), [n.split("/", 1)[1] for n in names], rotation=90, fontsize=6)
        ax.set_ylabel("output SQNR (dB)")
        ax.set_title(f"{report['model']} {graph}: output SQNR with only this node INT8 (red = kept float)")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _network_order(name: str) -> tuple:
    """Sort nodes by layer then position in the name, so bars read in network order."""
    parts = name.split("/")
    layer = next((int(p.split("_")[1]) for p in parts if p.startswith("layer_")), -1)
    return (parts[0], layer, name)


def _file_names(target: str) -> tuple[str, str, str]:
    tag = "" if target == "cpu" else f".{target}"
    return f"quantization_report{tag}.md", f"quantization_report{tag}.json", f"quantization_error{tag}.png"


def write_report(report: dict, directory: Path, target: str = "cpu") -> list[Path]:
    """quantization_report.{md,json} and quantization_error.png; NPU flavours add ``.<target>``."""
    directory.mkdir(parents=True, exist_ok=True)
    md, js, png = (directory / n for n in _file_names(target))
    plotted = any(report["sensitivity"].values()) and plot_sensitivity(report, png)
    report = report | ({"plot": png.name} if plotted else {})
    js.write_text(json.dumps(report, indent=1) + "\n")
    md.write_text(render_markdown(report))
    return [md, js, png] if plotted else [md, js]
