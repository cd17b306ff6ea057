"""Compare static calibration recipes on the same validation set and put the table into the report
of the static QDQ flavour (the OpenVINO one; the CPU flavour calibrates no ranges).

    python tools/compare_recipes.py [--model tiny.en] [--recipes "minmax, per-channel" ...]

Every recipe is calibrated on the same recorded inputs (calibration_audio/, FP32 pipeline) and
keeps the same nodes in float as the shipped static table, so only the recipe differs. Writes
models/<model>/recipe_comparison.json and re-renders models/<model>/quantization_report.openvino.md.
With --recipes, only those are run and the other rows are kept from the last comparison.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import replace
from pathlib import Path

from common import ROOT, VALIDATION_MANIFEST, model_parser

from amanuensis.engine import WhisperModel
from amanuensis.evaluation import evaluate, read_manifest
from amanuensis.models import WhisperCheckpoint
from amanuensis.quantize import committed_table_path, load_table
from amanuensis.quantize.calibration import find_calibration_clips, record_inputs
from amanuensis.quantize.pipeline import GATE_DECODING, table_from_inputs
from amanuensis.quantize.recipe import QuantRecipe
from amanuensis.quantize.report import render_markdown
from amanuensis.runtime import RuntimeOptions
from amanuensis.sessions import first_line

RECIPES = {
    "minmax, per-tensor": QuantRecipe(method="minmax"),
    "entropy, per-tensor": QuantRecipe(method="entropy"),
    "percentile 99.999, per-tensor": QuantRecipe(method="percentile"),
    "minmax, per-channel": QuantRecipe(method="minmax", per_channel=True),
}


def _merge_with_previous(rows: list[dict], path: Path) -> list[dict]:
    """Rows of this run, plus the last comparison's rows of recipes not run now, in RECIPES order."""
    by_recipe = {row["recipe"]: row for row in json.loads(path.read_text())} if path.exists() else {}
    by_recipe.update({row["recipe"]: row for row in rows})
    return [by_recipe[label] for label in RECIPES if label in by_recipe]


def main() -> None:
    parser = model_parser(__doc__)
    parser.add_argument("--recipes", nargs="+", choices=list(RECIPES), default=list(RECIPES), metavar="RECIPE")
    args = parser.parse_args()
    checkpoint = WhisperCheckpoint.load(args.model)
    shipped = load_table(checkpoint, committed_table_path(checkpoint.files.name, "openvino"), "openvino")
    entries = read_manifest(VALIDATION_MANIFEST)
    fp32 = WhisperModel(checkpoint, RuntimeOptions(precision="fp32", threads=args.threads))
    recorded = record_inputs(fp32, find_calibration_clips(ROOT / "calibration_audio"), ROOT)
    fp32_wer = evaluate(fp32, entries, GATE_DECODING).wer
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label in args.recipes:
            recipe = RECIPES[label]
            table = replace(table_from_inputs(checkpoint, recorded, recipe), excluded_nodes=shipped.excluded_nodes)
            path = Path(tmp) / "table.json"
            table.save(path)
            try:
                options = RuntimeOptions(precision="int8", threads=args.threads, range_table=path)
                wer = evaluate(WhisperModel(checkpoint, options), entries, GATE_DECODING).wer
            except Exception as error:  # a recipe onnxruntime cannot build or run is a row, not a crash
                reason = first_line(error)[:200]
                rows.append({"recipe": label, "wer": None, "delta": None, "fp32_wer": fp32_wer, "error": reason})
                print(f"{label:32s} failed: {reason}", flush=True)
                continue
            rows.append({"recipe": label, "wer": wer, "delta": wer - fp32_wer, "fp32_wer": fp32_wer})
            print(f"{label:32s} INT8 WER {wer:6.2f}  Δ {wer - fp32_wer:+.2f}", flush=True)
    out_dir = ROOT / "models" / checkpoint.files.name
    rows = _merge_with_previous(rows, out_dir / "recipe_comparison.json")
    (out_dir / "recipe_comparison.json").write_text(json.dumps(rows, indent=1) + "\n")
    report_path = out_dir / "quantization_report.openvino.json"
    report = json.loads(report_path.read_text())
    report["recipe_comparison"] = rows
    report_path.write_text(json.dumps(report, indent=1) + "\n")
    (out_dir / "quantization_report.openvino.md").write_text(render_markdown(report))
    print(f"wrote {out_dir / 'recipe_comparison.json'} and updated the report")


if __name__ == "__main__":
    main()
