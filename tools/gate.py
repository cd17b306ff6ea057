"""Judge a model's INT8 build on this machine by the quantization gate, without recalibrating.

    python tools/gate.py [--model tiny.en|base] [--table TABLE.json] [--threads 2] [--json OUT]

`amanuensis quantize` gates the builds it searches on the machine that searches; this runs the
same gate (every condition, FP32 against INT8, greedy, each language in its language) on the
shipped table, or on ``--table``, wherever it is run. Its use is a CPU other than the one that
searched: on x86 without VNNI the CPU flavour stores its weights as uint8 (docs/quantization.md),
and this shows whether the gate still holds there.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

from common import gate_conditions, model_parser

from amanuensis import conditions
from amanuensis.engine import load_model
from amanuensis.quantize import kernels
from amanuensis.quantize.pipeline import evaluate_conditions
from amanuensis.runtime import RuntimeOptions


def main() -> None:
    parser = model_parser(__doc__)
    parser.add_argument("--table", type=Path, help="range table to judge (default: the model's shipped one)")
    parser.add_argument("--json", type=Path, help="also write the results here (tools/doc_tables.py renders them)")
    args = parser.parse_args()

    found = gate_conditions(args.model)
    fp32 = load_model(args.model, RuntimeOptions(precision="fp32", threads=args.threads))
    int8 = load_model(args.model, RuntimeOptions(precision="int8", threads=args.threads, range_table=args.table))
    fp32_reports = evaluate_conditions(fp32, found, "FP32")
    int8_reports = evaluate_conditions(int8, found, "INT8")
    results = [conditions.compare(c, fp32_reports[c.name], int8_reports[c.name]) for c in found]

    machine = (
        f"{platform.machine()}, {'no VNNI' if kernels.saturating_cpu() else 'VNNI'}, "
        f"{kernels.weight_storage()} weights, {args.threads} threads, {time.strftime('%Y-%m-%d')}"
    )
    print(f"\n{args.model} INT8 ({args.table or 'shipped table'}), {machine}")
    print("| condition | clips | FP32 | INT8 | Δ | QoI | passes |\n|---|---:|---:|---:|---:|---:|---|")
    for r in results:
        print(
            f"| {r.name} | {r.clips} | "
            f"{r.fp32_wer:.2f} | {r.int8_wer:.2f} | {r.delta:+.2f} | {r.qoi:.1%} | {'yes' if r.passed else 'NO'} |"
        )
    in_languages = [r for r in results if r.language]
    if in_languages:
        print(f"pooled over {len(in_languages)} languages: Δ {conditions.pooled_delta(in_languages):+.2f}")
    passed = conditions.gate_passed(results)
    print(f"gate {'passes' if passed else 'FAILS'}")
    if args.json:
        rows = [r.to_dict() for r in results]
        args.json.write_text(
            json.dumps(
                {"model": args.model, "machine": machine, "gate": {"passed": passed, "conditions": rows}}, indent=1
            )
            + "\n"
        )


if __name__ == "__main__":
    main()
