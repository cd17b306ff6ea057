"""Calibration uses real speech from calibration_audio/, never validation audio, never noise."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from amanuensis.audio import N_SAMPLES, load_audio, log_mel_spectrogram, pad_or_trim
from amanuensis.quantize import committed_table_path
from amanuensis.quantize.calibration import (
    CalibrationDataError,
    check_disjoint,
    find_calibration_clips,
    record_inputs,
    sha256_file,
)
from amanuensis.quantize.recipe import RangeTable

from ..conftest import CALIBRATION_DIR, ROOT, VALIDATION_MANIFEST

MIN_SPEECH_RMS_DBFS = -45.0  # read speech sits around −20 to −30 dBFS; noise floors and silence far below


@pytest.fixture(scope="module", params=["cpu", "openvino", "qnn", "vitisai"])
def shipped_table(request: pytest.FixtureRequest) -> RangeTable:
    return RangeTable.load(committed_table_path("tiny.en", request.param))


def test_shipped_ranges_come_from_the_calibration_folder(shipped_table: RangeTable) -> None:
    """Every clip the shipped ranges were computed from is a file in calibration_audio/, unchanged
    (the dynamic CPU flavour has no ranges: its few clips only ranked node sensitivity)."""
    clean = [s for s in shipped_table.calibration if "noise" not in s]
    if shipped_table.recipe.scheme == "static":
        assert len(clean) == len(find_calibration_clips(CALIBRATION_DIR))
    for source in shipped_table.calibration:
        path = ROOT / source["path"]
        assert path.resolve().is_relative_to(CALIBRATION_DIR.resolve()), source["path"]
        assert path.is_file() and sha256_file(path) == source["sha256"], f"{path} changed or missing"


def test_calibration_clips_are_real_speech(shipped_table: RangeTable) -> None:
    """Decodable audio of speech-like level and length: random arrays or silence would fail here."""
    for source in shipped_table.calibration:
        audio = load_audio(ROOT / source["path"])
        rms_dbfs = 20 * np.log10(np.sqrt(np.mean(audio.samples**2)) + 1e-12)
        assert 1.0 < audio.duration < 60.0
        assert abs(audio.duration - source["seconds"]) < 1e-3
        assert rms_dbfs > MIN_SPEECH_RMS_DBFS, f"{source['path']} is too quiet to be speech"
        # Speech has a strongly varying envelope; stationary noise does not.
        frames = audio.samples[: len(audio.samples) // 400 * 400].reshape(-1, 400)
        envelope = np.sqrt(np.mean(frames**2, axis=1)) + 1e-9
        assert np.percentile(envelope, 95) / np.percentile(envelope, 10) > 5.0, source["path"]


def test_calibration_and_validation_are_disjoint() -> None:
    validation = [
        VALIDATION_MANIFEST.parent / line.split("\t")[0] for line in VALIDATION_MANIFEST.read_text().split("\n") if line
    ]
    check_disjoint(find_calibration_clips(CALIBRATION_DIR), validation)  # raises on overlap


def test_overlap_and_empty_folders_are_refused(tmp_path: Path) -> None:
    with pytest.raises(CalibrationDataError, match="holds no audio files"):
        find_calibration_clips(tmp_path)
    clips = find_calibration_clips(CALIBRATION_DIR)
    with pytest.raises(CalibrationDataError, match="also in the validation set"):
        check_disjoint(clips, [clips[0].path])


def test_recorded_inputs_are_what_the_graphs_see(tiny) -> None:
    """The encoder input recorded for a clip is that clip's log-mel window; decoder states start at SOT."""
    clip = find_calibration_clips(CALIBRATION_DIR)[0]
    recorded = record_inputs(tiny, [clip], ROOT)
    # transcribe pads with 30 s of silent audio before the log-mel, as openai/whisper does
    expected = pad_or_trim(log_mel_spectrogram(load_audio(clip.path).samples, 80, padding=N_SAMPLES), 3000)
    assert len(recorded.encoder) == 1
    np.testing.assert_allclose(recorded.encoder[0]["mel"][0], expected, atol=1e-5)
    first = recorded.decoder[0]
    assert int(first.small["tokens"][0, 0]) == tiny.tokenizer.sot and int(first.small["offset"][0]) == 0
    # States replay the cache exactly as it was: step n sees n filled slots, the rest masked.
    state = recorded.decoder[5]
    feed = state.feed(tiny.checkpoint.dims)
    assert int(feed["offset"][0]) == 5
    assert np.all(feed["mask"][0, :5] == 0) and np.all(feed["mask"][0, 5:] < -1000)
    assert np.any(feed["self_k_0"][..., :5] != 0) and not np.any(feed["self_k_0"][..., 5:])
    assert recorded.sources[0]["path"].startswith("calibration_audio/")


def test_noisy_calibration_records_the_mix_and_sensitivity_inputs_are_spread(tiny) -> None:
    """A noisy copy is transcribed as mixed (not as the clean file) and named with its mix; the
    sensitivity inputs are full graph feeds picked across every recorded decoder step."""
    from amanuensis.quantize.calibration import NOISE_FOLDER, with_noisy_copies
    from amanuensis.quantize.pipeline import SENSITIVITY_DECODER_STEPS, sensitivity_feeds

    clean = find_calibration_clips(CALIBRATION_DIR)[:1]
    clips = with_noisy_copies(clean, CALIBRATION_DIR / NOISE_FOLDER)
    recorded = record_inputs(tiny, clips, ROOT)
    assert "noise" not in recorded.sources[0] and recorded.sources[1]["noise"]["snr_db"] in (0, 5, 10, 15, 20)
    clean_mel, noisy_mel = (feed["mel"] for feed in recorded.encoder[:2])
    assert not np.array_equal(clean_mel, noisy_mel)
    feeds = sensitivity_feeds(recorded)
    assert 0 < len(feeds["decoder"]) <= SENSITIVITY_DECODER_STEPS + 1
    last = feeds["decoder"][-1]
    assert last["self_k_0"].shape[-1] == tiny.checkpoint.dims.n_text_ctx
    assert int(last["offset"][0]) > int(feeds["decoder"][0]["offset"][0]) or len(feeds["decoder"]) == 1


def test_multilingual_calibration_decodes_each_clip_in_its_language(base) -> None:
    """A multilingual model calibrates every language in that language, and ranks node sensitivity
    on a clip of each language, clean and noisy."""
    from amanuensis.quantize.calibration import NOISE_FOLDER, sensitivity_clips, with_noisy_copies

    clips = find_calibration_clips(CALIBRATION_DIR, multilingual=True)
    languages = {"en", "de", "es", "fr", "it", "ja", "pt", "ru", "zh"}
    assert {c.language for c in clips} == languages
    assert all(c.language is None for c in find_calibration_clips(CALIBRATION_DIR))
    picked = sensitivity_clips(with_noisy_copies(clips, CALIBRATION_DIR / NOISE_FOLDER))
    assert {c.language for c in picked if c.noise} == {c.language for c in picked if not c.noise} == languages

    german = next(c for c in clips if c.language == "de")
    as_french = replace(german, language="fr")  # the clip's language is used, not detected
    recorded = record_inputs(base, [german, as_french], ROOT)
    assert [s["language"] for s in recorded.sources] == ["de", "fr"]
    given = [int(state.small["tokens"].ravel()[0]) for state in recorded.decoder if int(state.small["offset"][0]) == 1]
    # fallback reruns (temperature) give a clip's language again, never another
    assert list(dict.fromkeys(given)) == [base.tokenizer.language_token(code) for code in ("de", "fr")]
