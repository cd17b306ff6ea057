"""Audio decoding and Whisper's log-mel frontend, in numpy.

The numerics follow openai/whisper's ``audio.py`` exactly: a periodic Hann window, centred
STFT with reflect padding, power spectrum without the last frame, Slaney-normalised mel
filters, ``log10`` clamped at 1e-10, a floor 8 below the maximum, then ``(x + 4) / 4``.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import BinaryIO, Protocol

import numpy as np
from threadpoolctl import ThreadpoolController

from amanuensis.errors import UserError

SAMPLE_RATE = 16000  # Hz: every model input is resampled to this
N_FFT = 400  # samples per STFT window (25 ms)
HOP_LENGTH = 160  # samples between frames (10 ms)
CHUNK_LENGTH = 30  # seconds of audio per encoder window
N_SAMPLES = CHUNK_LENGTH * SAMPLE_RATE  # 480000 samples in one window
N_FRAMES = N_SAMPLES // HOP_LENGTH  # 3000 mel frames in one window
FRAMES_PER_SECOND = SAMPLE_RATE // HOP_LENGTH  # 100 mel frames per second
N_SAMPLES_PER_TOKEN = HOP_LENGTH * 2  # the encoder's conv stride halves the frame rate
LOG_CLAMP = 1e-10  # floor on mel power before log10
DYNAMIC_RANGE = 8.0  # log10 units kept below the maximum (80 dB)
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")  # file types looked for when scanning folders
_STFT_BLOCK_FRAMES = 4096  # frames per FFT block: bounds memory on hour-long files


class AudioError(UserError):
    """Input that cannot be turned into speech samples; the message is for the user."""


class SampleSource(Protocol):
    """Mono 16 kHz samples read a stretch at a time (``samples.SampleFile``: decoded to disk)."""

    def __len__(self) -> int: ...

    def read(self, start: int, stop: int) -> np.ndarray: ...


Samples = np.ndarray | SampleSource  # in memory, or read as needed


def read_samples(samples: Samples, start: int, stop: int) -> np.ndarray:
    """Samples ``start`` … ``stop`` (clipped to the signal) of an array or a source."""
    start, stop = max(start, 0), min(stop, len(samples))
    if isinstance(samples, np.ndarray):
        return samples[start:stop]
    return samples.read(start, stop) if stop > start else np.zeros(0, np.float32)


@dataclass(frozen=True)
class DecodedAudio:
    """Mono float32 samples at SAMPLE_RATE, plus what the file originally was."""

    samples: Samples  # shape (n,), float32 in [-1, 1]: an array, or on disk (samples.open_audio)
    source_rate: int  # Hz of the file before resampling
    source_channels: int  # channels before down-mixing
    replaced_samples: int = 0  # NaN/inf samples in the file, set to silence

    @property
    def duration(self) -> float:
        return len(self.samples) / SAMPLE_RATE


def resample(samples: np.ndarray, source_rate: int, target_rate: int = SAMPLE_RATE) -> np.ndarray:
    """High-quality resampling with soxr (librosa's default backend)."""
    if source_rate == target_rate:
        return samples.astype(np.float32, copy=False)
    import soxr

    return soxr.resample(samples, source_rate, target_rate, quality="HQ").astype(np.float32)


def read_with_soundfile(source: Path | BinaryIO) -> tuple[np.ndarray, int] | None:
    """(frames × channels float32, rate) from a file path or an open binary file; None if
    libsndfile cannot read it."""
    import soundfile as sf

    try:
        data, rate = sf.read(str(source) if isinstance(source, Path) else source, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError):
        return None
    return data, rate


def _decoding_failures() -> tuple[type[BaseException], ...]:
    """What librosa's decoders raise for a file they cannot read (and nothing else)."""
    failures: tuple[type[BaseException], ...] = (EOFError, OSError, RuntimeError, ValueError)
    try:
        from audioread.exceptions import DecodeError

        failures += (DecodeError,)
    except ImportError:
        pass
    import soundfile as sf

    return (*failures, sf.LibsndfileError)


def _read_with_librosa(path: Path) -> tuple[np.ndarray, int] | None:
    """Fallback for containers libsndfile cannot open (e.g. m4a via audioread/ffmpeg)."""
    import warnings

    import librosa

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            data, rate = librosa.load(str(path), sr=None, mono=False, dtype=np.float32)
    except _decoding_failures():
        return None
    data = np.atleast_2d(data).T  # librosa gives (channels, n)
    return data, int(rate)


def checked_audio_path(path: str | os.PathLike[str]) -> Path:
    """``path`` as a Path if it names a non-empty readable file, else an AudioError saying why not."""
    path = Path(path)
    if path.is_dir():
        raise AudioError(f"{path}: is a directory, not an audio file")
    if not path.exists():
        raise AudioError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: file is empty")
    if not os.access(path, os.R_OK):
        raise AudioError(f"{path}: permission denied (the file is not readable by this user)")
    return path


def load_audio(path: str | os.PathLike[str]) -> DecodedAudio:
    """Decode a wav/flac/ogg/mp3 file to mono 16 kHz float32, or raise AudioError."""
    path = checked_audio_path(path)
    decoded = read_with_soundfile(path) or _read_with_librosa(path)
    if decoded is None:
        raise AudioError(f"{path}: not a readable audio file (corrupt, truncated or unsupported)")
    return mono_16k(*decoded, where=str(path))


def mono_16k(data: np.ndarray, rate: int, where: str) -> DecodedAudio:
    """Decoded frames × channels as mono 16 kHz samples, NaN/inf silenced."""
    if data.shape[0] == 0:
        raise AudioError(f"{where}: contains no audio samples")
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    mono, replaced = replace_non_finite(mono)
    return DecodedAudio(resample(mono, rate), rate, data.shape[1], replaced)


def replace_non_finite(samples: np.ndarray) -> tuple[np.ndarray, int]:
    """NaN and ±inf samples set to 0 (silence), and how many there were.

    One NaN reaches every mel frame of its window through the STFT and the file-wide maximum,
    and turns the whole transcription into noise; a recorder's glitch should cost only itself.
    """
    bad = ~np.isfinite(samples)
    count = int(bad.sum())
    if count:
        samples = np.where(bad, np.float32(0.0), samples).astype(np.float32, copy=False)
    return samples, count


def hann_window(length: int = N_FFT) -> np.ndarray:
    """Periodic Hann window, as torch.hann_window(length) uses."""
    n = np.arange(length)
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * n / length)


def _hz_to_mel(freqs: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above."""
    f_sp = 200.0 / 3
    mels = freqs / f_sp
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    above = freqs >= min_log_hz
    mels = np.where(above, min_log_mel + np.log(np.maximum(freqs, 1e-12) / min_log_hz) / logstep, mels)
    return mels


def _mel_to_hz(mels: np.ndarray) -> np.ndarray:
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    freqs = f_sp * mels
    return np.where(mels >= min_log_mel, min_log_hz * np.exp(logstep * (mels - min_log_mel)), freqs)


def mel_filters(n_mels: int, sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT) -> np.ndarray:
    """Triangular Slaney-normalised mel filterbank, shape (n_mels, n_fft // 2 + 1)."""
    fft_freqs = np.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1)
    mel_points = np.linspace(_hz_to_mel(np.array(0.0)), _hz_to_mel(np.array(sample_rate / 2.0)), n_mels + 2)
    hz_points = _mel_to_hz(mel_points)
    widths = np.diff(hz_points)
    ramps = hz_points[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (hz_points[2:] - hz_points[:-2]))[:, None]
    return weights.astype(np.float32)


def _frame_power(frames: np.ndarray, window: np.ndarray) -> np.ndarray:
    """|rfft|² of windowed frames (frames × N_FFT), as (n_fft//2+1, frames)."""
    spectrum = np.fft.rfft(frames * window, axis=-1)
    return (spectrum.real**2 + spectrum.imag**2).T


def _power_spectrogram(samples: np.ndarray) -> np.ndarray:
    """|STFT|² of centred frames, dropping the last frame like Whisper; (n_fft//2+1, frames)."""
    padded = np.pad(samples.astype(np.float64), N_FFT // 2, mode="reflect")
    n_frames = 1 + (len(padded) - N_FFT) // HOP_LENGTH
    n_keep = n_frames - 1
    frames_view = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP_LENGTH]
    window = hann_window()
    power = np.zeros((N_FFT // 2 + 1, n_keep), dtype=np.float64)
    # Frames that see only trailing zeros (the window of silence transcription appends) have zero
    # power: skip their FFTs. Exact, and most of the work for a clip shorter than 30 s.
    n_compute = _frames_with_power(samples, len(samples))
    for start in range(0, n_compute, _STFT_BLOCK_FRAMES):
        stop = min(start + _STFT_BLOCK_FRAMES, n_compute)
        power[:, start:stop] = _frame_power(frames_view[start:stop], window)
    return power


def log_mel_spectrogram(samples: np.ndarray, n_mels: int = 80, padding: int = 0) -> np.ndarray:
    """Whisper log-mel features of the whole signal, shape (n_mels, frames), float32.

    ``padding`` zeros are appended first; transcription appends a full window (N_SAMPLES) so
    the last window is complete. The max-8 floor is taken over the whole signal, as Whisper
    does, so a window's features depend on the loudest part of the file.
    """
    if padding:
        samples = np.pad(samples, (0, padding))
    if len(samples) <= N_FFT // 2:
        raise AudioError("audio is too short to analyse")
    mel = _filterbank_product(mel_filters(n_mels).astype(np.float64), _power_spectrogram(samples))
    log_spec = np.log10(np.maximum(mel, LOG_CLAMP))
    log_spec = np.maximum(log_spec, log_spec.max() - DYNAMIC_RANGE)
    return ((log_spec + 4.0) / 4.0).astype(np.float32)


class LogMelWindows:
    """Whisper's log-mel of a long signal, computed a window at a time with the file-wide floor.

    ``log_mel_spectrogram`` holds the whole file's float64 power spectrogram (about 1 GB per
    30 min of audio). Here one pass over the file, block by block, finds the loudest log-mel value
    (the floor is 8 below it, as Whisper takes it over the whole signal); each window's features
    are then computed when asked for, from the samples around it. Memory stays at a few blocks
    besides the samples themselves, and each window equals the same columns of
    ``log_mel_spectrogram(samples, n_mels, padding)``.
    """

    def __init__(self, samples: Samples, n_mels: int = 80, padding: int = 0) -> None:
        self.samples, self.n_mels, self.padding = samples, n_mels, padding
        self.length = len(samples) + padding  # the signal with its appended zeros
        if self.length <= N_FFT // 2:
            raise AudioError("audio is too short to analyse")
        self.frames = self.length // HOP_LENGTH  # Whisper drops the STFT's last frame
        self._filters = mel_filters(n_mels).astype(np.float64)
        self._computed = _frames_with_power(samples, self.length)
        peak = -np.inf if self._computed == self.frames else np.log10(LOG_CLAMP)  # silent frames
        for start in range(0, self._computed, _STFT_BLOCK_FRAMES):
            peak = max(peak, float(self._log_mel(start, min(start + _STFT_BLOCK_FRAMES, self.frames)).max()))
        self.floor = peak - DYNAMIC_RANGE

    def window(self, start: int, count: int) -> np.ndarray:
        """Features of frames ``start`` … ``start + count`` (fewer at the end), (n_mels, frames)."""
        stop = min(start + count, self.frames)
        log_spec = np.maximum(self._log_mel(start, stop), self.floor)
        return ((log_spec + 4.0) / 4.0).astype(np.float32)

    def _log_mel(self, start: int, stop: int) -> np.ndarray:
        power = np.zeros((N_FFT // 2 + 1, max(stop - start, 0)), np.float64)
        computed_stop = min(stop, self._computed)
        if computed_stop > start:
            segment = self._reflected(start * HOP_LENGTH, (computed_stop - 1) * HOP_LENGTH + N_FFT)
            frames = np.lib.stride_tricks.sliding_window_view(segment, N_FFT)[::HOP_LENGTH]
            power[:, : computed_stop - start] = _frame_power(frames, hann_window())
        return np.log10(np.maximum(_filterbank_product(self._filters, power), LOG_CLAMP))

    def _reflected(self, begin: int, end: int) -> np.ndarray:
        """Positions ``begin`` … ``end`` of the signal reflect-padded by N_FFT // 2 on both sides,
        as float64 (np.pad's "reflect": the edge sample is not repeated)."""
        index = np.arange(begin, end) - N_FFT // 2
        index = np.abs(index)  # left edge
        index = np.where(index >= self.length, 2 * (self.length - 1) - index, index)  # right edge
        inside = index < len(self.samples)  # the rest is the appended zeros
        values = np.zeros(len(index), np.float64)
        if inside.any():
            first, last = int(index[inside].min()), int(index[inside].max())
            values[inside] = read_samples(self.samples, first, last + 1)[index[inside] - first]
        return values


def _nonzero_end(samples: Samples, block: int = 30 * SAMPLE_RATE) -> int:
    """One past the last non-zero sample (0 if all are zero), reading from the end a block at a time."""
    for stop in range(len(samples), 0, -block):
        nonzero = np.flatnonzero(read_samples(samples, stop - block, stop))
        if len(nonzero):
            return max(stop - block, 0) + int(nonzero[-1]) + 1
    return 0


def _frames_with_power(samples: Samples, length: int) -> int:
    """How many leading frames (of ``length // HOP_LENGTH``) can have non-zero power, for
    ``samples`` followed by zeros up to ``length``: the rest see only trailing zeros (and, past the
    reflected edge, zeros again), so their FFTs can be skipped."""
    frames = length // HOP_LENGTH
    half = N_FFT // 2
    end = _nonzero_end(samples)
    if end <= length - (half + 1):  # the reflected tail is zeros too
        return min(frames, -(-(end + half) // HOP_LENGTH))  # first frame starting at or past end + half
    return frames


_BLAS_LIMIT = threading.Lock()  # the BLAS thread count is process-wide: one limiter at a time


@cache
def _blas_controller() -> ThreadpoolController:
    return ThreadpoolController()


def _filterbank_product(filters: np.ndarray, power: np.ndarray) -> np.ndarray:
    """``filters @ power`` on one BLAS thread.

    With more, numpy's OpenBLAS leaves its worker threads spinning after the product, on the
    cores onnxruntime's threads need next: the encoder run that follows a mel took 0.105 s
    instead of 0.077 s (tiny.en INT8, 2 threads), at every stream update. One thread costs the
    product about 1 ms and gives the same numbers.
    """
    with _BLAS_LIMIT, _blas_controller().limit(limits=1, user_api="blas"):
        return filters @ power


def peak_frame_dbfs(samples: np.ndarray, frame: int = N_FFT) -> float:
    """Loudness of the loudest ``frame``-sample stretch, in dB relative to full scale."""
    usable = len(samples) // frame * frame
    if usable == 0:
        rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64)))) if len(samples) else 0.0
    else:
        frames = samples[:usable].reshape(-1, frame).astype(np.float64)
        rms = float(np.sqrt(np.mean(frames**2, axis=1)).max())
    return 20.0 * np.log10(max(rms, 1e-10))


def pad_or_trim(mel: np.ndarray, frames: int = N_FRAMES) -> np.ndarray:
    """Fit features to exactly ``frames`` columns: zero-pad or cut the end."""
    if mel.shape[-1] > frames:
        return mel[..., :frames]
    if mel.shape[-1] < frames:
        return np.pad(mel, [(0, 0)] * (mel.ndim - 1) + [(0, frames - mel.shape[-1])])
    return mel
