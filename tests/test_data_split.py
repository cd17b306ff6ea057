"""Calibration and validation never mix: not a file, not a recording, not a speaker."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from amanuensis.quantize.calibration import MULTILINGUAL_FOLDER, find_calibration_clips, sha256_file

from .conftest import CALIBRATION_DIR, ROOT

CALIBRATION = CALIBRATION_DIR / MULTILINGUAL_FOLDER
VALIDATION = ROOT / "tests/data/validation/multilingual"
LANGUAGES = ("de", "es", "fr", "it", "ja", "pt", "ru", "zh")


def _speakers(folder: Path) -> dict[str, str]:
    with (folder / "speakers.tsv").open(encoding="utf-8", newline="") as f:
        return {row["file"]: row["speaker"] for row in csv.DictReader(f, delimiter="\t")}


def _references(folder: Path) -> list[str]:
    lines = (folder / "refs.tsv").read_text(encoding="utf-8").splitlines()
    return [line.partition("\t")[0] for line in lines if line.strip()]


@pytest.mark.parametrize("language", LANGUAGES)
def test_multilingual_calibration_and_validation_share_no_clip_or_speaker(language: str) -> None:
    calibration, validation = CALIBRATION / language, VALIDATION / language
    calibration_speakers, validation_speakers = _speakers(calibration), _speakers(validation)
    assert len(validation_speakers) >= 36 and len(calibration_speakers) >= 60
    for folder, speakers in ((calibration, calibration_speakers), (validation, validation_speakers)):
        clips = sorted(p.relative_to(folder).as_posix() for p in (folder / "clips").iterdir())
        assert clips == sorted(speakers) == sorted(_references(folder))  # every clip listed, nothing else
    assert not set(calibration_speakers.values()) & set(validation_speakers.values())
    assert not {Path(f).name for f in calibration_speakers} & {Path(f).name for f in validation_speakers}


def test_no_recording_is_both_calibration_and_validation() -> None:
    """By content, across every language and the English sets (a renamed copy is still a copy)."""
    calibration = {c.sha256 for c in find_calibration_clips(CALIBRATION_DIR, multilingual=True)}
    validation_root = ROOT / "tests/data/validation"
    validation = {sha256_file(p) for p in validation_root.rglob("*") if p.suffix in (".mp3", ".flac", ".wav")}
    assert len(calibration) > 500 and len(validation) > 400
    assert not calibration & validation


def test_english_only_models_calibrate_without_the_other_languages() -> None:
    english = find_calibration_clips(CALIBRATION_DIR)
    everything = find_calibration_clips(CALIBRATION_DIR, multilingual=True)
    assert not [c for c in english if MULTILINGUAL_FOLDER in c.path.parts]
    assert len(everything) - len(english) == sum(len(_speakers(CALIBRATION / lang)) for lang in LANGUAGES)
