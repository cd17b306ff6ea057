"""Real background noise mixed into speech at a chosen SNR, reproducibly.

INT8 ranges calibrated on clean read speech do not cover what a microphone in a café or a street
hears, and a gate run on clean speech does not show the loss. Both calibration and the gate
therefore also use speech mixed with real noise recordings. Every mix is fully described by a
``NoiseMix`` (which recording, where in it, at what SNR), so a range table can name each one and a
run can be repeated exactly.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path

import numpy as np

from amanuensis.audio import AUDIO_SUFFIXES, load_audio
from amanuensis.errors import UserError

NOISE_LIST = "list.tsv"  # in every noise folder: one line per recording, with its licence


class NoiseError(UserError):
    """A noise folder that is missing, empty, or a recording that is silent."""


@dataclass(frozen=True)
class NoiseMix:
    """One speech + noise mix: enough to rebuild it bit for bit."""

    noise: str  # file name of the recording inside its noise folder
    snr_db: float  # speech power over noise power, both measured over the whole clip
    offset: int  # first noise sample used (16 kHz); the recording loops past its end
    seed: int  # the seed the mix was drawn with (recorded for the report)

    def to_dict(self) -> dict:
        return asdict(self)


def noise_files(folder: Path) -> list[Path]:
    """The recordings of a noise folder, sorted so that draws are reproducible."""
    if not folder.is_dir():
        raise NoiseError(f"noise folder {folder} does not exist")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
    if not paths:
        raise NoiseError(f"noise folder {folder} holds no audio files")
    return paths


@cache
def _noise_samples(path: Path) -> np.ndarray:
    samples = load_audio(path).samples
    if not np.any(samples):
        raise NoiseError(f"noise recording {path} is silent")
    return samples


def power(samples: np.ndarray) -> float:
    return float(np.mean(np.square(samples, dtype=np.float64)))


def mix(speech: np.ndarray, folder: Path, how: NoiseMix) -> np.ndarray:
    """Speech plus the described noise, scaled so that speech/noise power is ``how.snr_db``.

    The sum is scaled down only if it would clip, so the SNR holds and no sample exceeds ±1.
    """
    noise = _noise_samples(folder / how.noise)
    positions = (how.offset + np.arange(len(speech))) % len(noise)
    segment = noise[positions].astype(np.float64)
    speech_power = power(speech)
    gain = np.sqrt(speech_power / (power(segment) * 10.0 ** (how.snr_db / 10.0))) if speech_power else 0.0
    mixed = speech.astype(np.float64) + gain * segment
    peak = float(np.max(np.abs(mixed))) if len(mixed) else 0.0
    if peak > 1.0:
        mixed /= peak
    return mixed.astype(np.float32)


def stable_seed(*parts: object) -> int:
    """A seed from names (not Python's salted hash): the same clip gets the same mix on every machine."""
    return int.from_bytes(hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()[:8], "little")


def draw_mix(folder: Path, snrs_db: tuple[float, ...], seed: int) -> NoiseMix:
    """A recording, an SNR and a start point, drawn with ``seed``."""
    rng = np.random.default_rng(seed)
    files = noise_files(folder)
    path = files[int(rng.integers(len(files)))]
    snr = float(snrs_db[int(rng.integers(len(snrs_db)))])
    offset = int(rng.integers(len(_noise_samples(path))))
    return NoiseMix(path.name, snr, offset, seed)
