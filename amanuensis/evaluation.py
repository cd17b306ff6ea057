"""Word error rate and real-time factor over a manifest of reference transcripts."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import jiwer
import numpy as np

from amanuensis import noise
from amanuensis.audio import DecodedAudio, load_audio
from amanuensis.engine import WhisperModel
from amanuensis.errors import UserError
from amanuensis.normalizer import CHARACTER_SCORED, scoring_units
from amanuensis.transcribe import TranscribeOptions


class ManifestError(UserError):
    """A manifest line that cannot be used; the message names the line."""


@dataclass(frozen=True)
class ManifestEntry:
    audio: Path  # resolved against the manifest's folder
    reference: str
    noise: tuple[Path, noise.NoiseMix] | None = None  # (noise folder, mix): the clip as heard in that noise
    language: str | None = None  # the manifest's language column: decoded and scored as that language

    def load(self) -> DecodedAudio:
        """The clip's samples, with its noise mixed in if it has one."""
        decoded = load_audio(self.audio)
        if self.noise is None:
            return decoded
        return replace(decoded, samples=noise.mix(decoded.samples, *self.noise))


@dataclass(frozen=True)
class Utterance:
    audio: str  # path as written in the manifest
    reference: str
    hypothesis: str
    tokens: list[int]  # every segment's tokens, timestamps included
    duration: float  # seconds of audio
    seconds: float  # wall time to decode and transcribe it
    detected_language: str | None = None  # what the model detects with no language given (evaluate(detect=True))
    language: str | None = None  # the clip's own language when the manifest gives one (scored by its rules)


@dataclass(frozen=True)
class EvaluationReport:
    model: str
    utterances: list[Utterance]
    language: str | None = None  # how text is scored (normalizer.scoring_units); None: English, or mixed

    def _scored_as(self, utterance: Utterance) -> str | None:
        return utterance.language if utterance.language is not None else self.language

    @property
    def wer(self) -> float:
        """Corpus error rate in percent after normalizing both sides: edits over reference units,
        words or, for languages written without spaces, characters (``metric``), each clip by its
        own language's rules."""
        return error_rate(self.errors())

    def errors(self) -> list[tuple[int, int]]:
        """(edits, reference units) per clip, each scored by its language's rules."""
        return [utterance_errors([u.reference], [u.hypothesis], self._scored_as(u))[0] for u in self.utterances]

    @property
    def metric(self) -> str:
        metrics = {"CER" if self._scored_as(u) in CHARACTER_SCORED else "WER" for u in self.utterances}
        return metrics.pop() if len(metrics) == 1 else "WER/CER"

    def by_language(self) -> dict[str | None, EvaluationReport]:
        """One report per language the clips are scored in (a manifest may mix them)."""
        groups: dict[str | None, list[Utterance]] = {}
        for utterance in self.utterances:
            groups.setdefault(self._scored_as(utterance), []).append(utterance)
        return {language: EvaluationReport(self.model, group, language) for language, group in groups.items()}

    @property
    def detection_accuracy(self) -> float | None:
        """Share of clips whose detected language is the set's; None if detection was not run."""
        detected = [u.detected_language for u in self.utterances if u.detected_language is not None]
        if self.language is None or not detected:
            return None
        return sum(d == self.language for d in detected) / len(detected)

    @property
    def audio_seconds(self) -> float:
        return sum(u.duration for u in self.utterances)

    @property
    def rtf(self) -> float:
        """Processing time / audio time (lower is faster)."""
        return sum(u.seconds for u in self.utterances) / max(self.audio_seconds, 1e-9)

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "language": self.language,
            "metric": self.metric,
            "utterances": len(self.utterances),
            "audio_seconds": round(self.audio_seconds, 3),
            "wer": round(self.wer, 3),
            "rtf": round(self.rtf, 4),
            "language_detection": self.detection_accuracy,
            "languages": {
                language or "en": {
                    "metric": part.metric,
                    "error_rate": round(part.wer, 3),
                    "utterances": len(part.utterances),
                    "language_detection": part.detection_accuracy,
                }
                for language, part in self.by_language().items()
            },
            "results": [
                {"audio": u.audio, "reference": u.reference, "hypothesis": u.hypothesis, "seconds": round(u.seconds, 3)}
                for u in self.utterances
            ],
        }


def word_error_rate(references: list[str], hypotheses: list[str], language: str | None = None) -> float:
    """Corpus-level error rate (percent): total edits over total reference units, words or, for
    languages written without spaces, characters (``normalizer.scoring_units``)."""
    return error_rate(utterance_errors(references, hypotheses, language))


def error_rate(counts: list[tuple[int, int]]) -> float:
    """Percent: the edits of every utterance over their reference units (``utterance_errors``)."""
    units = sum(n for _, n in counts)
    if not units:
        raise ValueError("no reference words to score against")
    return 100.0 * sum(e for e, _ in counts) / units


def utterance_errors(
    references: list[str], hypotheses: list[str], language: str | None = None
) -> list[tuple[int, int]]:
    """(edits, reference units) per utterance, after normalization: what the corpus rate sums."""
    counts = []
    for reference, hypothesis in zip(references, hypotheses, strict=True):
        ref, hyp = scoring_units(reference, language), scoring_units(hypothesis, language)
        words = len(ref.split())
        if not words:
            counts.append((0, 0))
            continue
        out = jiwer.process_words(ref, hyp)
        counts.append((out.substitutions + out.deletions + out.insertions, words))
    return counts


def paired_wer_difference(
    a: list[tuple[int, int]], b: list[tuple[int, int]], resamples: int = 10_000, seed: int = 0
) -> tuple[float, float, float]:
    """WER(a) − WER(b) in points with a 95 % paired bootstrap interval over utterances.

    Both systems transcribed the same utterances, so resampling utterances (not words) keeps each
    utterance's difficulty shared: whether "equal WER" holds is then a question of the interval.
    """
    edits_a, words = np.array(a, np.float64).T
    edits_b, words_b = np.array(b, np.float64).T
    if not np.array_equal(words, words_b) or not words.sum():
        raise ValueError("paired WER needs the same utterances, with reference words")
    scored = words > 0  # utterances without reference words do not count (see word_error_rate)
    edits_a, edits_b, words = edits_a[scored], edits_b[scored], words[scored]
    picks = np.random.default_rng(seed).integers(0, len(words), (resamples, len(words)))
    differences = 100.0 * (edits_a[picks].sum(1) - edits_b[picks].sum(1)) / words[picks].sum(1)
    low, high = np.percentile(differences, [2.5, 97.5])
    return float(100.0 * (edits_a.sum() - edits_b.sum()) / words.sum()), float(low), float(high)


def read_manifest(path: str | os.PathLike[str]) -> list[ManifestEntry]:
    """Lines ``audio-path<TAB>reference[<TAB>language]``; paths relative to the manifest; '#'
    comments. The language column (a Whisper code) says how the clip is decoded and scored."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: no such manifest file")
    entries = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split("\t")
        if not 2 <= len(fields) <= 3 or not fields[0].strip():
            raise ManifestError(f"{path}:{number}: expected 'audio-path<TAB>reference[<TAB>language]'")
        language = fields[2].strip() if len(fields) == 3 and fields[2].strip() else None
        if language is not None and not re.fullmatch(r"[a-z]{2,3}", language):
            raise ManifestError(f"{path}:{number}: language {language!r} is not a Whisper language code (en, de, zh…)")
        entries.append(ManifestEntry(path.parent / fields[0].strip(), fields[1].strip(), language=language))
    if not entries:
        raise ManifestError(f"{path}: no utterances")
    return entries


def evaluate(
    model: WhisperModel,
    entries: list[ManifestEntry],
    options: TranscribeOptions | None = None,
    on_utterance: Callable[[Utterance], None] | None = None,
    detect: bool = False,
) -> EvaluationReport:
    """Transcribe every entry and score it; with ``detect``, also ask which language the model
    detects in each clip when none is given (its first window only: segments are lazy, so the
    detection costs one encoder run and one decoder step, and is not timed)."""
    utterances = []
    given = options.language if options else None
    for entry in entries:
        start = time.perf_counter()
        audio = entry.load()
        decoding = options
        if given is None and entry.language is not None:  # the manifest says which language the clip is in
            decoding = replace(options or TranscribeOptions(), language=entry.language)
        segments, _ = model.transcribe(audio.samples, decoding)
        segments = list(segments)
        elapsed = time.perf_counter() - start
        detected = None
        if detect:
            undetermined = replace(options or TranscribeOptions(), language=None)
            detected = model.transcribe(audio.samples, undetermined)[1].language
        utterance = Utterance(
            audio=str(entry.audio),
            reference=entry.reference,
            hypothesis="".join(s.text for s in segments).strip(),
            tokens=[t for s in segments for t in s.tokens],
            duration=audio.duration,
            seconds=elapsed,
            detected_language=detected,
            language=entry.language if given is None else given,
        )
        utterances.append(utterance)
        if on_utterance:
            on_utterance(utterance)
    languages = {u.language for u in utterances}
    return EvaluationReport(model.name, utterances, languages.pop() if len(languages) == 1 else None)
