"""Each finer integer form's effect on its own, SmoothQuant included, for every LayerNorm-fed MatMul.

    python tools/smoothquant_effect.py [--model tiny.en] [--json out.json]

For each MatMul that reads a LayerNorm (where SmoothQuant's scales can be folded), the output
SQNR of its graph with only that node quantized (CPU flavour, run-time scales) as: one 8-bit
scale per tensor; the same after SmoothQuant scaling with α = 0.3 / 0.5 / 0.7; per-token scales;
16-bit activations in two limbs. Inputs: the calibration clips the quantize pipeline ranks
sensitivity on (clean and noisy), never validation audio.
"""

from __future__ import annotations

import datetime
import json
import tempfile
from pathlib import Path

import numpy as np
import onnx
from common import ROOT, model_parser

from amanuensis.engine import WhisperModel
from amanuensis.models import WhisperCheckpoint
from amanuensis.quantize.analysis import compute_nodes, isolated_sensitivity
from amanuensis.quantize.calibration import (
    NOISE_FOLDER,
    find_calibration_clips,
    record_inputs,
    sensitivity_clips,
    with_noisy_copies,
)
from amanuensis.quantize.pipeline import float_graph, sensitivity_feeds
from amanuensis.quantize.recipe import QuantRecipe
from amanuensis.quantize.smooth import ALPHAS, apply_scales, channel_stats, scales_for, smoothable
from amanuensis.runtime import RuntimeOptions

DYNAMIC = QuantRecipe(scheme="dynamic", per_channel=True)


def main() -> int:
    parser = model_parser(__doc__)
    parser.add_argument("--graphs", nargs="+", choices=["encoder", "decoder"], default=["encoder", "decoder"])
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    checkpoint = WhisperCheckpoint.load(args.model)
    calibration = ROOT / "calibration_audio"
    clips = with_noisy_copies(find_calibration_clips(calibration), calibration / NOISE_FOLDER)
    clips = sensitivity_clips(clips)  # as the pipeline picks them
    fp32 = WhisperModel(checkpoint, RuntimeOptions(precision="fp32", threads=args.threads))
    feeds = sensitivity_feeds(record_inputs(fp32, clips, ROOT))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for graph in args.graphs:
            path = float_graph(checkpoint, graph)
            model = onnx.load(str(path))
            targets = smoothable(model)
            stats = channel_stats(model, set(targets.values()), feeds[graph], len(feeds[graph]))
            nodes = {n.name: n for n in compute_nodes(model) if n.name in targets}
            for name, node in nodes.items():
                row = {"graph": graph, "node": name, "macs": node.macs}
                for technique in (None, "per_token", "a16"):
                    ranked = isolated_sensitivity(path, DYNAMIC, {}, [node], feeds[graph], technique=technique)
                    row[technique or "per_tensor"] = ranked[0].sqnr_db
                for alpha in ALPHAS:
                    smoothed = onnx.load(str(path))
                    norm = targets[name]
                    readers = [n for n in smoothed.graph.node if norm in n.input]
                    weights = [
                        onnx.numpy_helper.to_array(i)
                        for r in readers
                        for i in smoothed.graph.initializer
                        if i.name == r.input[1]
                    ]
                    apply_scales(smoothed, {norm: scales_for(stats[norm].peak, weights, alpha)})
                    smoothed_path = Path(tmp) / f"smoothed-{graph}.onnx"
                    onnx.save(smoothed, str(smoothed_path))
                    ranked = isolated_sensitivity(smoothed_path, DYNAMIC, {}, [node], feeds[graph])
                    row[f"smooth_{alpha}"] = ranked[0].sqnr_db
                rows.append(row)
                print(f"{name}: " + ", ".join(f"{k} {v:.1f}" for k, v in row.items() if isinstance(v, float)))
    columns = ["per_tensor", *(f"smooth_{a}" for a in ALPHAS), "per_token", "a16"]
    print(f"\n{args.model}, output SQNR (dB) with only the node quantized, {datetime.date.today()}\n")
    print("| graph | node | " + " | ".join(columns) + " |")
    print("|---|---|" + "---:|" * len(columns))
    for row in rows:
        print(f"| {row['graph']} | `{row['node']}` | " + " | ".join(f"{row[c]:.1f}" for c in columns) + " |")
    gains = {c: float(np.median([r[c] - r["per_tensor"] for r in rows])) for c in columns[1:]}
    print("\nmedian gain over per-tensor (dB): " + ", ".join(f"{c} {g:+.1f}" for c, g in gains.items()))
    if args.json:
        args.json.write_text(
            json.dumps({"date": str(datetime.date.today()), "rows": rows, "median_gain_db": gains}, indent=1) + "\n"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
