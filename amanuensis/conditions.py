"""The listening conditions INT8 is judged in: clean read speech, the same speech in real noise the
calibration never heard, and real noisy narrow-band recordings.

A quantized model that holds on clean audiobooks can still fall apart in a café; the gate, the WER
regression tests and the benchmark therefore compare FP32 and INT8 per condition, on the corpus
WER (Δ) and on the share of clips INT8 did not make worse (QoI, as WhisperKit reports it).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from amanuensis.evaluation import EvaluationReport, ManifestEntry, read_manifest
from amanuensis.noise import draw_mix, noise_files, stable_seed

# The noisy validation copy: gate-only noise recordings (tests/data/noise, none of them used in
# calibration), one drawn per clip with its SNR from these, seeded by the clip's name.
NOISY_SNRS_DB = (0.0, 5.0, 10.0, 15.0, 20.0)
NOISY_SEED_SALT = "gate"
CLEAN_MAX_DELTA = 0.5  # WER points INT8 may lose on clean speech
NOISY_MAX_DELTA = 1.0  # … and in noise, where FP32's own WER is far higher
QOI_MIN = 0.85  # share of clips whose WER INT8 must leave no worse than FP32's

DEFAULT_VALIDATION = Path("tests/data/validation/librispeech_test_other/refs.tsv")
DEFAULT_GATE_NOISE = Path("tests/data/noise")
DEFAULT_MULTILINGUAL = Path("tests/data/validation/multilingual")
LANGUAGE_MAX_DELTA = 2.0  # error-rate points INT8 may lose in any one language …
POOLED_MAX_DELTA = 1.0  # … and over all of them, clips weighted (pooled_delta)
DETECTION_SLACK = 1 / 40  # share of a language's clips INT8 may detect wrongly beyond FP32's misses
# NOIZEUS may not be copied into the repository (see its README): it is read where the project's
# shared data sits, beside the checkout, and the condition is left out where it is absent.
DEFAULT_NOIZEUS = Path("../shared/data/noisy_noizeus")


@dataclass(frozen=True)
class Condition:
    name: str  # "clean" | "noisy" | "noizeus", or a language code for a multilingual set
    entries: tuple[ManifestEntry, ...]
    max_delta: float  # WER points INT8 may lose against FP32 here
    description: str  # one line for reports
    language: str | None = None  # the clips' language: decoded as such and scored by its rules; None: English


def clean(manifest: Path = DEFAULT_VALIDATION) -> Condition:
    entries = tuple(read_manifest(manifest))
    return Condition("clean", entries, CLEAN_MAX_DELTA, f"{len(entries)} clips of {manifest.parent.name}")


def noisy(
    manifest: Path = DEFAULT_VALIDATION,
    noise_dir: Path = DEFAULT_GATE_NOISE,
    snrs_db: Sequence[float] = NOISY_SNRS_DB,
) -> Condition:
    """The clean clips, each mixed with one gate noise recording at one SNR (seeded by its name)."""
    entries = tuple(
        ManifestEntry(e.audio, e.reference, (noise_dir, draw_mix(noise_dir, tuple(snrs_db), _seed(e))))
        for e in read_manifest(manifest)
    )
    snrs = "/".join(f"{s:g}" for s in snrs_db)
    recordings = len(noise_files(noise_dir))
    description = f"the {len(entries)} clean clips, each + one of {recordings} gate noise recordings at {snrs} dB SNR"
    return Condition("noisy", entries, NOISY_MAX_DELTA, description)


def _seed(entry: ManifestEntry) -> int:
    return stable_seed(NOISY_SEED_SALT, entry.audio.name)


def noizeus(folder: Path = DEFAULT_NOIZEUS) -> Condition | None:
    """NOIZEUS (real recorded noise, 8 kHz telephone band) read from the shared data; None if absent."""
    refs = folder / "refs.tsv"
    if not refs.is_file():
        return None
    with refs.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    entries = tuple(ManifestEntry(folder / row["file"], row["transcript"]) for row in rows)
    return Condition("noizeus", entries, NOISY_MAX_DELTA, f"{len(entries)} NOIZEUS clips (real noise, 0–15 dB, 8 kHz)")


def multilingual(root: Path = DEFAULT_MULTILINGUAL) -> list[Condition]:
    """One condition per language folder under ``root`` (``<code>/refs.tsv``), each decoded in its
    own language and scored by its rules (CER where words are not spaced)."""
    folders = sorted(p for p in root.iterdir() if (p / "refs.tsv").is_file()) if root.is_dir() else []
    found = []
    for folder in folders:
        entries = tuple(read_manifest(folder / "refs.tsv"))
        description = f"{len(entries)} Common Voice clips in {folder.name}"
        found.append(Condition(folder.name, entries, LANGUAGE_MAX_DELTA, description, folder.name))
    return found


def pooled_delta(results: Sequence[ConditionResult]) -> float:
    """Mean Δ over languages, each weighted by its clips: the multilingual gate's pooled figure."""
    clips = sum(r.clips for r in results)
    return sum(r.delta * r.clips for r in results) / clips if clips else 0.0


def gate_conditions(
    validation: Path = DEFAULT_VALIDATION,
    noise_dir: Path = DEFAULT_GATE_NOISE,
    noizeus_dir: Path = DEFAULT_NOIZEUS,
    multilingual_dir: Path | None = None,
) -> list[Condition]:
    """Every condition the gate judges; NOIZEUS only where the shared data is present; each
    language of ``multilingual_dir`` too when given (a multilingual model's gate)."""
    found = noizeus(noizeus_dir)
    languages = multilingual(multilingual_dir) if multilingual_dir is not None else []
    return [clean(validation), noisy(validation, noise_dir), *([found] if found else []), *languages]


@dataclass(frozen=True)
class ConditionResult:
    """FP32 against INT8 on one condition, and whether INT8 passes there."""

    name: str
    clips: int
    fp32_wer: float  # percent
    int8_wer: float  # percent
    qoi: float  # share of clips whose WER INT8 did not make worse than FP32's
    max_delta: float  # the condition's limit on int8_wer − fp32_wer
    language: str | None = None  # set for a multilingual set's language (pooled_delta pools those)
    fp32_detection: float | None = None  # share of clips whose language FP32 detects right (None: not run)
    int8_detection: float | None = None  # … and INT8: it may miss at most DETECTION_SLACK more of them

    @property
    def delta(self) -> float:
        return self.int8_wer - self.fp32_wer

    @property
    def detection_holds(self) -> bool:
        if self.fp32_detection is None or self.int8_detection is None:
            return True
        return self.int8_detection >= self.fp32_detection - DETECTION_SLACK - 1e-9

    @property
    def passed(self) -> bool:
        return self.delta <= self.max_delta and self.qoi >= QOI_MIN and self.detection_holds

    def to_dict(self) -> dict:
        return {
            "condition": self.name,
            "clips": self.clips,
            "fp32_wer": round(self.fp32_wer, 3),
            "int8_wer": round(self.int8_wer, 3),
            "delta": round(self.delta, 3),
            "qoi": round(self.qoi, 4),
            "max_delta": self.max_delta,
            "passed": self.passed,
        } | (
            {"language": self.language, "fp32_detection": self.fp32_detection, "int8_detection": self.int8_detection}
            if self.language
            else {}
        )


def quality_of_int8(reference: EvaluationReport, quantized: EvaluationReport) -> float:
    """QoI: the share of scored clips on which the quantized model made no more word errors."""
    if [u.reference for u in reference.utterances] != [u.reference for u in quantized.utterances]:
        raise ValueError("QoI compares two transcriptions of the same clips")
    before, after = reference.errors(), quantized.errors()
    scored = [(b, a) for (b, words), (a, _) in zip(before, after, strict=True) if words]
    return sum(a <= b for b, a in scored) / len(scored) if scored else 1.0


def compare(condition: Condition, fp32: EvaluationReport, int8: EvaluationReport) -> ConditionResult:
    qoi = quality_of_int8(fp32, int8)
    return ConditionResult(
        condition.name,
        len(condition.entries),
        fp32.wer,
        int8.wer,
        qoi,
        condition.max_delta,
        condition.language,
        fp32.detection_accuracy,
        int8.detection_accuracy,
    )


def gate_shortfall(results: Sequence[ConditionResult]) -> float:
    """How far a build is from passing: points over each condition's limit, QoI points under its
    floor, and points of pooled Δ over the languages' limit (0 = passes)."""
    own = sum(max(0.0, r.delta - r.max_delta) + max(0.0, 100 * (QOI_MIN - r.qoi)) for r in results)
    languages = [r for r in results if r.language]
    return own + max(0.0, pooled_delta(languages) - POOLED_MAX_DELTA) if languages else own


def gate_passed(results: Sequence[ConditionResult]) -> bool:
    return all(r.passed for r in results) and gate_shortfall(results) == 0.0
