"""Write the README's and docs' figure tables from the committed JSON they come from.

    python tools/doc_tables.py          # rewrite every marked table in place
    python tools/doc_tables.py --check  # exit 1, naming the table, if a document and its JSON disagree

A generated table sits between ``<!-- table: NAME -->`` and ``<!-- /table -->`` in a Markdown
file; NAME is one of ``TABLES`` below, each a function of one JSON file in the repository. Prose
around the tables (dates, ratios, comments) stays hand-written.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MARKED = re.compile(r"(<!-- table: (?P<name>[\w.-]+) -->\n)(?P<body>.*?)(<!-- /table -->)", re.DOTALL)
CONDITION_LABELS = {
    "clean": "clean (LibriSpeech test-other)",
    "noisy": "the same in unseen noise, 0–20 dB",
    "noizeus": "NOIZEUS (real noise, 8 kHz)",
}
CONFIG_LABELS = {
    "amanuensis-int8": "amanuensis INT8",
    "faster-whisper-int8": "faster-whisper int8",
    "amanuensis-fp32": "amanuensis FP32",
    "faster-whisper-float32": "faster-whisper float32",
}


def _signed(value: float) -> str:
    return f"{value:+.2f}".replace("-", "−")


def benchmark(figures: dict) -> str:
    """``tools/bench.py --json``: one row per configuration."""
    names = list(figures["rows"][0]["conditions"])
    label = {"clean": "WER clean", "noisy": "WER noisy", "noizeus": "WER NOIZEUS"}
    lines = [
        "| configuration | RTF | peak RSS (MiB) | model on disk (MB) | "
        + " | ".join(label.get(n, f"WER {n}") for n in names)
        + " |",
        "|---|---:|---:|---:|" + "---:|" * len(names),
    ]
    for row in figures["rows"]:
        wers = " | ".join(f"{row['conditions'][n]['wer']:.2f}" for n in names)
        lines.append(
            f"| {CONFIG_LABELS.get(row['config'], row['config'])} | {row['rtf']:.3f} | {row['peak_rss_mib']:.0f} "
            f"| {row['model_bytes'] / 1e6:.1f} | {wers} |"
        )
    return "\n".join(lines) + "\n"


def gate(report: dict) -> str:
    """``amanuensis quantize``'s report, or ``tools/gate.py --json``: the gate's result on each condition."""
    lines = ["| condition | clips | FP32 WER | INT8 WER | Δ | QoI |", "|---|---:|---:|---:|---:|---:|"]
    for c in report["gate"]["conditions"]:
        lines.append(
            f"| {CONDITION_LABELS.get(c['condition'], c['condition'])} | {c['clips']} | {c['fp32_wer']:.2f} % "
            f"| {c['int8_wer']:.2f} % | {_signed(c['delta'])} | {round(100 * c['qoi'])} % |"
        )
    return "\n".join(lines) + "\n"


def word_timing(figures: dict) -> str:
    """``tools/word_timing.py --json``: word times against faster-whisper's, per precision."""
    lines = [
        "| Amanuensis | words | paired with faster-whisper's | median Δ (ms) | 90th percentile Δ (ms) |",
        "|---|---:|---:|---:|---:|",
    ]
    for precision in ("fp32", "int8"):
        row = figures[precision]
        lines.append(
            f"| {precision.upper()} | {row['words']} | {row['paired_words']} | {row['median_ms']:.0f} "
            f"| {row['p90_ms']:.0f} |"
        )
    return "\n".join(lines) + "\n"


TABLES: dict[str, tuple[str, Callable[[dict], str]]] = {
    "benchmark": ("models/tiny.en/benchmark.json", benchmark),
    "gate": ("models/tiny.en/quantization_report.json", gate),
    "gate_no_vnni": ("models/tiny.en/gate_no_vnni.json", gate),
    "word_timing": ("models/tiny.en/word_timing.json", word_timing),
}


def render(name: str) -> str:
    if name not in TABLES:
        raise SystemExit(f"unknown table {name!r}; known: {', '.join(TABLES)}")
    source, make = TABLES[name]
    return make(json.loads((ROOT / source).read_text()))


def refresh(text: str) -> str:
    """``text`` with every marked table rendered from its JSON."""
    return MARKED.sub(lambda m: m.group(1) + render(m.group("name")) + m.group(4), text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 where a table is stale")
    args = parser.parse_args()
    stale = []
    for document in DOCUMENTS:
        text = document.read_text()
        fresh = refresh(text)
        if fresh == text:
            continue
        if args.check:
            stale.append(document.relative_to(ROOT))
        else:
            document.write_text(fresh)
            print(f"rewrote the tables in {document.relative_to(ROOT)}")
    for document in stale:
        print(f"{document}: a table differs from its JSON; run python tools/doc_tables.py", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
