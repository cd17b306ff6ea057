"""Copy the shared Common Voice clips into the repository: ``calib`` clips to the calibration
audio, ``eval`` clips to the tests' validation data, never one into the other.

    python tools/import_multilingual.py [--source ../shared/data/multilingual]

Audio bytes are copied unchanged; each language folder gets ``refs.tsv`` (``file<TAB>sentence``,
the manifest form ``amanuensis evaluate`` reads) and ``speakers.tsv`` (``file<TAB>speaker``), so
the split can be checked by file and by speaker (tests/test_data_split.py).
"""

from __future__ import annotations

import argparse
import csv
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DESTINATIONS = {
    "calib": ROOT / "calibration_audio/multilingual",
    "eval": ROOT / "tests/data/validation/multilingual",
}


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def import_language(source: Path) -> dict[str, int]:
    """Copy one language folder's clips by split; returns how many went where."""
    sentences = {}
    with (source / "refs.tsv").open(encoding="utf-8") as f:
        for line in f:
            name, _, sentence = line.rstrip("\n").partition("\t")
            sentences[name] = sentence
    counts = {}
    for split, root in DESTINATIONS.items():
        rows = [r for r in _rows(source / "splits.tsv") if r["split"] == split]
        target = root / source.name
        (target / "clips").mkdir(parents=True, exist_ok=True)
        refs, speakers = [], []
        for row in sorted(rows, key=lambda r: r["file"]):
            shutil.copyfile(source / row["file"], target / row["file"])
            refs.append(f"{row['file']}\t{sentences[row['file']]}\n")
            speakers.append(f"{row['file']}\t{row['speaker']}\n")
        (target / "refs.tsv").write_text("".join(refs), encoding="utf-8")
        (target / "speakers.tsv").write_text("file\tspeaker\n" + "".join(speakers), encoding="utf-8")
        counts[split] = len(rows)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=ROOT.parent / "shared/data/multilingual")
    args = parser.parse_args()
    for language in sorted(p for p in args.source.iterdir() if (p / "splits.tsv").is_file()):
        print(language.name, import_language(language))


if __name__ == "__main__":
    main()
