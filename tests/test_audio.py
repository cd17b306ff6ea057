"""Frontend: decoding, resampling and Whisper log-mel against independent implementations."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile as sf
from faster_whisper.feature_extractor import FeatureExtractor
from scipy.signal import get_window
from threadpoolctl import threadpool_info

from amanuensis import audio
from amanuensis.audio import (
    N_FRAMES,
    N_SAMPLES,
    AudioError,
    hann_window,
    load_audio,
    log_mel_spectrogram,
    mel_filters,
    pad_or_trim,
    resample,
)
from amanuensis.samples import open_audio

from .conftest import CALIBRATION_DIR, VALIDATION_MANIFEST

VALIDATION_CLIP = VALIDATION_MANIFEST.parent / "1688-142285-0000.flac"  # 16 kHz flac
LJ_CLIP = CALIBRATION_DIR / "ljspeech/LJ001-0001.wav"  # 22.05 kHz wav


@pytest.fixture(scope="module")
def two_seconds() -> np.ndarray:
    """The first 2 s of a real clip: enough for a mel whose product is worth threading."""
    return load_audio(VALIDATION_CLIP).samples[: 2 * 16000]


@pytest.fixture(scope="module")
def stereo_44k(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """A 44.1 kHz stereo wav made from a real 16 kHz clip (left louder than right)."""
    speech = load_audio(VALIDATION_CLIP).samples
    up = resample(speech, 16000, 44100)
    path = tmp_path_factory.mktemp("audio") / "stereo44k.wav"
    sf.write(path, np.stack([0.8 * up, 0.4 * up], axis=1), 44100, subtype="PCM_16")
    return path, speech


def test_filters_and_window_match_librosa_and_scipy() -> None:
    for n_mels in (80, 128):
        reference = librosa.filters.mel(sr=16000, n_fft=400, n_mels=n_mels)
        np.testing.assert_allclose(mel_filters(n_mels), reference, atol=1e-7)
    np.testing.assert_allclose(hann_window(400), get_window("hann", 400, fftbins=True), atol=1e-12)


@pytest.mark.parametrize("clip", [VALIDATION_CLIP, LJ_CLIP], ids=["16k-flac", "22k-wav"])
def test_log_mel_matches_faster_whisper_extractor(clip: Path) -> None:
    samples = load_audio(clip).samples
    reference = FeatureExtractor(feature_size=80)(samples, padding=N_SAMPLES)
    ours = log_mel_spectrogram(samples, 80, padding=N_SAMPLES)
    assert ours.shape == reference.shape
    assert np.abs(ours - reference).max() < 1e-3


def _log_mel_every_frame(samples: np.ndarray, padding: int) -> np.ndarray:
    """Whisper's log-mel with an FFT for every frame (no shortcut for trailing silence)."""
    padded = np.pad(np.pad(samples, (0, padding)).astype(np.float64), 200, mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, 400)[::160][:-1]
    power = np.abs(np.fft.rfft(frames * hann_window(400), axis=-1)).T ** 2
    log_spec = np.log10(np.maximum(mel_filters(80).astype(np.float64) @ power, 1e-10))
    return ((np.maximum(log_spec, log_spec.max() - 8.0) + 4.0) / 4.0).astype(np.float32)


@pytest.mark.parametrize("padding", [0, 150, 201, N_SAMPLES])
def test_skipping_silent_tail_frames_is_exact(padding: int) -> None:
    speech = load_audio(VALIDATION_CLIP).samples[: 3 * 16000 + 7]
    with_silence = np.concatenate([speech, np.zeros(5000, np.float32)])  # trailing zeros of its own
    for samples in (speech, with_silence):
        np.testing.assert_array_equal(log_mel_spectrogram(samples, 80, padding), _log_mel_every_frame(samples, padding))


def _blas_threads() -> list[int]:
    return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]


class _RecordingPower:
    """A power spectrogram that notes the BLAS threads in force when the product is taken."""

    __array_ufunc__ = None  # ndarray @ this → this.__rmatmul__

    def __init__(self, power: np.ndarray) -> None:
        self.power = power
        self.threads_during: list[int] = []

    def __rmatmul__(self, filters: np.ndarray) -> np.ndarray:
        self.threads_during = _blas_threads()
        return filters @ self.power


def test_mel_filterbank_product_runs_on_one_blas_thread(
    monkeypatch: pytest.MonkeyPatch, two_seconds: np.ndarray
) -> None:
    """More BLAS threads spin after the product on the cores the encoder needs (audio.py)."""
    speech = two_seconds
    expected = log_mel_spectrogram(speech, 80, N_SAMPLES)
    recorders: list[_RecordingPower] = []
    power_spectrogram = audio._power_spectrogram

    def recording(samples: np.ndarray) -> _RecordingPower:
        recorders.append(_RecordingPower(power_spectrogram(samples)))
        return recorders[-1]

    monkeypatch.setattr(audio, "_power_spectrogram", recording)
    np.testing.assert_array_equal(log_mel_spectrogram(speech, 80, N_SAMPLES), expected)
    assert len(recorders) == 1 and recorders[0].threads_during
    assert set(recorders[0].threads_during) == {1}


def test_log_mel_leaves_blas_threads_as_found(two_seconds: np.ndarray) -> None:
    """The process's BLAS setting must come back after the one-thread product, also when streams
    in several threads compute mels at once."""
    before = _blas_threads()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: log_mel_spectrogram(two_seconds, 80, N_SAMPLES), range(64)))
    assert _blas_threads() == before


def test_log_mel_44k_stereo_file(stereo_44k: tuple[Path, np.ndarray]) -> None:
    path, original = stereo_44k
    decoded = load_audio(path)
    assert (decoded.source_rate, decoded.source_channels) == (44100, 2)
    reference = FeatureExtractor(feature_size=80)(decoded.samples, padding=N_SAMPLES)
    ours = log_mel_spectrogram(decoded.samples, 80, padding=N_SAMPLES)
    assert np.abs(ours - reference).max() < 1e-3
    # Down-mix (mean 0.6×) and the 16k → 44.1k → 16k round trip keep the speech itself.
    n = min(len(original), len(decoded.samples))
    assert np.corrcoef(original[:n], decoded.samples[:n])[0, 1] > 0.999
    assert abs(np.std(decoded.samples) / np.std(original) - 0.6) < 0.01


def test_normalization_is_whispers() -> None:
    """max−8 floor and (x+4)/4: a tone's floor sits exactly 2.0 below its peak."""
    t = np.arange(16000) / 16000
    tone = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    mel = log_mel_spectrogram(tone)
    assert mel.max() - mel.min() == pytest.approx(2.0, abs=1e-6)
    assert mel.dtype == np.float32
    assert pad_or_trim(mel).shape == (80, N_FRAMES)
    assert pad_or_trim(np.ones((80, 4000), np.float32)).shape == (80, N_FRAMES)


@pytest.mark.parametrize(
    "fmt,subtype", [("WAV", "PCM_24"), ("FLAC", "PCM_16"), ("OGG", "VORBIS"), ("MP3", "MPEG_LAYER_III")]
)
def test_decodes_common_formats(tmp_path: Path, fmt: str, subtype: str) -> None:
    speech = load_audio(VALIDATION_CLIP).samples
    path = tmp_path / f"clip.{fmt.lower()}"
    sf.write(path, speech, 16000, format=fmt, subtype=subtype)
    decoded = load_audio(path).samples
    assert abs(len(decoded) - len(speech)) < 0.1 * 16000  # codecs may pad a frame or two
    lossy = fmt in ("OGG", "MP3")
    if not lossy:
        np.testing.assert_allclose(decoded, speech, atol=1e-4)


def _bad_inputs(tmp_path: Path) -> dict[str, Path]:
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio at all\n" * 20)
    truncated = tmp_path / "truncated.flac"
    truncated.write_bytes(VALIDATION_CLIP.read_bytes()[:60])
    zero = tmp_path / "zero.wav"
    sf.write(zero, np.zeros(0, np.float32), 16000)
    folder = tmp_path / "folder.wav"
    folder.mkdir()
    return {
        "empty": empty,
        "text": text,
        "truncated": truncated,
        "zero": zero,
        "folder": folder,
        "missing": tmp_path / "nope.wav",
    }


@pytest.mark.parametrize("kind,message", [
    ("empty", "file is empty"), ("text", "not a readable audio file"), ("truncated", "not a readable audio file"),
    ("zero", "no audio samples"), ("folder", "is a directory"), ("missing", "no such file"),
])  # fmt: skip
@pytest.mark.parametrize("decode", [load_audio, open_audio], ids=["in memory", "to disk"])
def test_bad_input_raises_audio_error(tmp_path: Path, kind: str, message: str, decode) -> None:
    with pytest.raises(AudioError, match=message):
        decode(_bad_inputs(tmp_path)[kind])


@pytest.mark.parametrize(
    "rate,channels,fmt",
    [(16000, 1, "FLAC"), (22050, 1, "WAV"), (44100, 2, "WAV"), (8000, 1, "MP3"), (16000, 1, "MP3"), (16000, 1, "OGG")],
)
def test_decoding_to_disk_gives_the_in_memory_samples(tmp_path: Path, rate: int, channels: int, fmt: str) -> None:
    """A file decoded a block at a time into a SampleFile (down-mixed, silenced, resampled by a
    streaming resampler) holds exactly what decoding it whole gives, and its log-mel windows are
    the array's. Longer than one decoding block; the float WAVs hold NaN samples."""
    from amanuensis.audio import LogMelWindows, read_samples
    from amanuensis.samples import BLOCK_SECONDS, SampleFile

    speech = resample(load_audio(VALIDATION_CLIP).samples, 16000, rate)
    long = np.tile(speech, int(BLOCK_SECONDS * rate / len(speech)) + 2)
    if fmt == "WAV":  # float samples can be NaN
        long[[5, len(long) // 2]] = np.nan
    path = tmp_path / f"long.{fmt.lower()}"
    sf.write(path, np.stack([long] * channels, axis=1) if channels > 1 else long, rate, format=fmt,
             subtype="FLOAT" if fmt == "WAV" else None)  # fmt: skip
    whole, streamed = load_audio(path), open_audio(path)
    assert isinstance(streamed.samples, SampleFile)
    assert streamed.replaced_samples == whole.replaced_samples and len(streamed.samples) == len(whole.samples)
    # MP3 decodes to within 1e-6 after the seek before each block (mpg123's filter state), others
    # exactly; in the log-mel that is under 0.05 dB where the power is smallest
    tolerance, mel_tolerance = (1e-6, 1e-3) if fmt == "MP3" else (0, 0)
    np.testing.assert_allclose(read_samples(streamed.samples, 0, len(streamed.samples)), whole.samples, atol=tolerance)
    from_disk, in_memory = LogMelWindows(streamed.samples, 80, N_SAMPLES), LogMelWindows(whole.samples, 80, N_SAMPLES)
    for start in (0, 2500, in_memory.frames - 100):
        np.testing.assert_allclose(from_disk.window(start, 3000), in_memory.window(start, 3000), atol=mel_tolerance)


@pytest.mark.parametrize("padding", [0, 150, 201, N_SAMPLES])
def test_window_by_window_log_mel_is_the_whole_file_one(padding: int) -> None:
    """Transcription computes the log-mel a window at a time (bounded memory on long files): every
    window equals the same columns of the whole-file computation, floor included."""
    from amanuensis.audio import LogMelWindows

    speech = load_audio(VALIDATION_CLIP).samples
    long = np.concatenate([speech, np.zeros(5000, np.float32), speech * 0.1, speech])  # > one window
    whole = log_mel_spectrogram(long, 80, padding)
    windows = LogMelWindows(long, 80, padding)
    assert windows.frames == whole.shape[1]
    for start in (0, 1234, 3000, windows.frames - 10):
        np.testing.assert_array_equal(windows.window(start, 3000), whole[:, start : start + 3000])
