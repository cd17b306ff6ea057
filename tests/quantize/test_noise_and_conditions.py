"""Noise mixing, and the data INT8 is calibrated and judged on: real speech, real noise, never shared."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from amanuensis import conditions, noise
from amanuensis.audio import load_audio
from amanuensis.evaluation import EvaluationReport, Utterance
from amanuensis.quantize import committed_table_path
from amanuensis.quantize.calibration import (
    CALIBRATION_SNRS_DB,
    NOISE_FOLDER,
    check_disjoint,
    find_calibration_clips,
    sha256_file,
    with_noisy_copies,
)
from amanuensis.quantize.recipe import RangeTable

from ..conftest import CALIBRATION_DIR, ROOT, SAMPLE

CALIBRATION_NOISE = CALIBRATION_DIR / NOISE_FOLDER
GATE_NOISE = ROOT / conditions.DEFAULT_GATE_NOISE
VALIDATION = ROOT / conditions.DEFAULT_VALIDATION
MIN_NOISE_RMS_DBFS = -60.0  # the quietest recording (a fireplace) is −43 dBFS; digital silence is far below


def _listed(folder) -> dict[str, dict]:
    with (folder / noise.NOISE_LIST).open(encoding="utf-8", newline="") as f:
        return {row["file"]: row for row in csv.DictReader(f, delimiter="\t")}


@pytest.mark.parametrize("snr_db", [0.0, 7.5, 20.0])
def test_mix_has_the_requested_snr(snr_db: float) -> None:
    speech = 0.1 * load_audio(SAMPLE).samples  # quiet enough that no mix needs scaling down
    how = noise.NoiseMix("blanket_rain.ogg", snr_db, offset=12345, seed=0)
    mixed = noise.mix(speech, CALIBRATION_NOISE, how)
    added = mixed.astype(np.float64) - speech
    measured = 10 * np.log10(noise.power(speech) / noise.power(added))
    assert abs(measured - snr_db) < 0.01
    assert np.array_equal(mixed, noise.mix(speech, CALIBRATION_NOISE, how))  # the description rebuilds it


def test_loud_mix_is_scaled_not_clipped() -> None:
    speech = load_audio(SAMPLE).samples / np.max(np.abs(load_audio(SAMPLE).samples))  # peaks at full scale
    mixed = noise.mix(speech, CALIBRATION_NOISE, noise.NoiseMix("blanket_storm.ogg", 0.0, 0, 0))
    assert np.max(np.abs(mixed)) <= 1.0
    correlation = np.corrcoef(mixed, speech)[0, 1]
    assert 0.5 < correlation < 0.95  # speech still there, noise clearly added (0 dB)


def test_draws_are_reproducible_and_vary() -> None:
    draws = [noise.draw_mix(CALIBRATION_NOISE, CALIBRATION_SNRS_DB, noise.stable_seed("x", i)) for i in range(40)]
    again = [noise.draw_mix(CALIBRATION_NOISE, CALIBRATION_SNRS_DB, noise.stable_seed("x", i)) for i in range(40)]
    assert draws == again
    assert len({d.noise for d in draws}) > 3 and len({d.snr_db for d in draws}) > 3


@pytest.mark.parametrize("folder", [CALIBRATION_NOISE, GATE_NOISE], ids=["calibration", "gate"])
def test_noise_recordings_are_real_and_attributed(folder) -> None:
    """Every recording is listed with its source and licence, is not silent, and is not speech-free
    synthetic filler (a constant tone or white noise has a flat spectrum envelope over time)."""
    listed = _listed(folder)
    files = noise.noise_files(folder)
    assert {p.name for p in files} == set(listed)
    for path in files:
        row = listed[path.name]
        assert row["source_repo"] and row["licence"], path.name
        samples = load_audio(path).samples
        assert abs(len(samples) / 16000 - float(row["duration_s"])) < 0.1, path.name
        assert 20 * np.log10(np.sqrt(noise.power(samples))) > MIN_NOISE_RMS_DBFS, path.name
        frames = samples[: len(samples) // 1600 * 1600].reshape(-1, 1600)
        level = np.sqrt(np.mean(frames**2, axis=1)) + 1e-9
        assert np.std(20 * np.log10(level)) > 0.5, f"{path.name} is as steady as a synthetic signal"


def test_gate_noise_is_never_calibration_noise() -> None:
    calibration = {sha256_file(p) for p in noise.noise_files(CALIBRATION_NOISE)}
    gate = {sha256_file(p) for p in noise.noise_files(GATE_NOISE)}
    assert calibration and gate and not calibration & gate
    assert not {p.name for p in noise.noise_files(CALIBRATION_NOISE)} & {p.name for p in noise.noise_files(GATE_NOISE)}


def test_calibration_shares_no_clip_with_any_gate_condition() -> None:
    clips = find_calibration_clips(CALIBRATION_DIR)
    assert not any(NOISE_FOLDER in c.path.parts for c in clips)  # noise recordings are never speech clips
    found = conditions.gate_conditions(VALIDATION, GATE_NOISE, ROOT / conditions.DEFAULT_NOIZEUS)
    for condition in found:
        check_disjoint(clips, [e.audio for e in condition.entries])  # raises on a shared file or name


def test_noisy_calibration_copies_use_calibration_noise_only() -> None:
    clips = find_calibration_clips(CALIBRATION_DIR)
    both = with_noisy_copies(clips, CALIBRATION_NOISE)
    assert both[: len(clips)] == clips and len(both) == 2 * len(clips)
    names = {p.name for p in noise.noise_files(CALIBRATION_NOISE)}
    for clip in both[len(clips) :]:
        folder, how = clip.noise
        assert folder == CALIBRATION_NOISE and how.noise in names and how.snr_db in CALIBRATION_SNRS_DB


@pytest.mark.parametrize("target", ["cpu", "openvino", "qnn", "vitisai"])
def test_shipped_table_names_real_calibration_audio(target: str) -> None:
    """Each clip a shipped table was made from is an unchanged calibration file; a noisy one names
    a calibration noise recording and an SNR in the calibration range."""
    table = RangeTable.load(committed_table_path("tiny.en", target))
    names = {p.name for p in noise.noise_files(CALIBRATION_NOISE)}
    for source in table.calibration:
        path = ROOT / source["path"]
        assert path.resolve().is_relative_to(CALIBRATION_DIR.resolve()) and NOISE_FOLDER not in path.parts
        assert sha256_file(path) == source["sha256"], source["path"]
        if "noise" in source:
            assert source["noise"]["noise"] in names and source["noise"]["snr_db"] in CALIBRATION_SNRS_DB


def test_noisy_condition_is_the_clean_clips_in_gate_noise() -> None:
    clean, noisy = conditions.clean(VALIDATION), conditions.noisy(VALIDATION, GATE_NOISE)
    assert [e.audio for e in clean.entries] == [e.audio for e in noisy.entries]
    assert all(e.noise and e.noise[0] == GATE_NOISE for e in noisy.entries)
    first = noisy.entries[0]
    assert not np.array_equal(first.load().samples, clean.entries[0].load().samples)
    assert np.array_equal(first.load().samples, noisy.entries[0].load().samples)


def _report(hypotheses: list[str], references: list[str], language: str | None = None) -> EvaluationReport:
    return EvaluationReport(
        "m",
        [
            Utterance(f"{i}.wav", r, h, [], 1.0, 0.1)
            for i, (r, h) in enumerate(zip(references, hypotheses, strict=True))
        ],
        language,
    )


def test_qoi_counts_clips_not_made_worse() -> None:
    refs = ["a b c d", "e f g h", "i j k l", "m n o p"]
    fp32 = _report(["a b c d", "e f x h", "i j k l", "m n o q"], refs)
    int8 = _report(["a b c x", "e f g h", "i j k l", "m x o q"], refs)  # worse, better, same, worse
    assert conditions.quality_of_int8(fp32, int8) == 0.5
    result = conditions.compare(conditions.Condition("c", (), 1.0, ""), fp32, int8)
    assert result.delta == pytest.approx(100 * (3 - 2) / 16) and not result.passed  # QoI 50 % < 85 %


def test_each_language_is_a_condition_scored_by_its_rules() -> None:
    found = {c.name: c for c in conditions.multilingual(ROOT / conditions.DEFAULT_MULTILINGUAL)}
    assert sorted(found) == ["de", "es", "fr", "it", "ja", "pt", "ru", "zh"]
    assert all(c.language == name and len(c.entries) >= 36 for name, c in found.items())
    assert all(c.max_delta == conditions.LANGUAGE_MAX_DELTA for c in found.values())
    # zh is scored by character: one wrong character of nine is 11 points, not a whole word
    zh = found["zh"]
    refs = ["你是有能力的不是吗", "他是两代帝师"]
    fp32 = _report(refs, refs, "zh")
    int8 = _report(["你是有能力的不是嗎", "他是两代帝师"], refs, "zh")
    result = conditions.compare(zh, fp32, int8)
    assert result.delta == pytest.approx(100 / 15) and result.qoi == 0.5


def test_pooled_delta_weights_languages_by_clips() -> None:
    def result(clips: int, delta: float) -> conditions.ConditionResult:
        return conditions.ConditionResult("x", clips, 10.0, 10.0 + delta, 1.0, conditions.LANGUAGE_MAX_DELTA)

    assert conditions.pooled_delta([result(40, 2.0), result(40, 0.0)]) == pytest.approx(1.0)
    assert conditions.pooled_delta([result(36, 1.0), result(4, -9.0)]) == pytest.approx(0.0)


def test_languages_pass_alone_and_pooled() -> None:
    def result(delta: float, language: str | None = "de") -> conditions.ConditionResult:
        limit = conditions.LANGUAGE_MAX_DELTA if language else conditions.CLEAN_MAX_DELTA
        return conditions.ConditionResult("x", 40, 10.0, 10.0 + delta, 1.0, limit, language)

    assert conditions.gate_passed([result(0.2, None), result(1.9), result(0.0)])  # pooled 0.95
    # every language within its own 2 points, but 1.5 pooled: the multilingual gate fails
    assert not conditions.gate_passed([result(0.2, None), result(1.5), result(1.5)])
    assert conditions.gate_shortfall([result(0.2, None), result(1.5), result(1.5)]) == pytest.approx(0.5)
    assert not conditions.gate_passed([result(0.2, None), result(2.5), result(-2.0)])  # one language too far


def test_int8_may_miss_one_language_in_forty_more_than_fp32() -> None:
    def result(fp32: float, int8: float) -> conditions.ConditionResult:
        return conditions.ConditionResult("de", 40, 10.0, 10.0, 1.0, conditions.LANGUAGE_MAX_DELTA, "de", fp32, int8)

    assert result(39 / 40, 38 / 40).passed
    assert not result(39 / 40, 37 / 40).passed
    assert result(None, None).passed  # detection not measured
