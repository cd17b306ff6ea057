"""Calibration inputs: the real tensors each graph sees while transcribing real speech.

The encoder sees mel windows; the decoder step sees (token, offset, mask, self-attention cache,
cross K/V) states. Both are recorded by running the FP32 pipeline over the clips in
``calibration_audio/`` with observers on the sessions, so the ranges come from the inputs the
graphs are later given, never from synthetic or random data.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization.calibrate import CalibrationDataReader, create_calibrator

from amanuensis import noise
from amanuensis.audio import AUDIO_SUFFIXES, SAMPLE_RATE, load_audio
from amanuensis.engine import WhisperModel
from amanuensis.errors import UserError
from amanuensis.export.io_names import cross_kv_names, self_kv_names
from amanuensis.models import ModelDims
from amanuensis.quantize.masked_ranges import bound_masked_ranges
from amanuensis.quantize.mse import min_mse_ranges
from amanuensis.quantize.qdq import CALIBRATION_METHODS
from amanuensis.quantize.recipe import QuantRecipe, Ranges
from amanuensis.quantize.targets import get_target, prepare_float_model
from amanuensis.runtime import Feed
from amanuensis.transcribe import TranscribeOptions

# Calibration decodes greedily: the states are the same kind beam search visits, at a fifth the cost.
CALIBRATION_DECODING = TranscribeOptions(beam_size=1, best_of=1)
# Calibration runs per collect_data call, which bounds the calibrator's memory. MinMax keeps two
# scalars per tensor per run; the histogram methods keep every full tensor of the chunk until it is
# binned (the encoder's attention maps are 54 MB each), so they take few runs at a time.
CHUNK_RUNS = {"minmax": 32, "entropy": 2, "percentile": 2, "minmse": 2}
NOISE_FOLDER = "noise"  # inside the calibration folder: real noise recordings, never speech to calibrate on
# inside the calibration folder: Common Voice speech in other languages, for multilingual models only
MULTILINGUAL_FOLDER = "multilingual"
# Every clean clip is calibrated on once more with one of those recordings mixed in, at one of
# these SNRs, drawn with a seed made from the clip's name (recorded in the table).
CALIBRATION_SNRS_DB = (0.0, 5.0, 10.0, 15.0, 20.0)
CALIBRATION_SEED_SALT = "calibration"
SENSITIVITY_CLIPS = 4  # clips (half clean, half noisy) whose graph inputs rank node sensitivity (English-only)


class CalibrationDataError(UserError):
    """The calibration set is missing, empty, or overlaps the validation set."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class CalibrationClip:
    path: Path
    sha256: str
    noise: tuple[Path, noise.NoiseMix] | None = None  # (noise folder, mix) for a noisy copy
    language: str | None = None  # decoded in this language (multilingual models); None: the model's own choice

    def load(self) -> np.ndarray:
        samples = load_audio(self.path).samples
        return noise.mix(samples, *self.noise) if self.noise else samples


def find_calibration_clips(directory: Path, multilingual: bool = False) -> list[CalibrationClip]:
    """Every speech file under ``directory`` but its noise folder, and but its multilingual folder
    unless ``multilingual`` (an English-only model has no use for it). Sorted: the table is
    reproducible. For a multilingual model each clip carries its language (the folder under
    ``multilingual/``, English elsewhere), so calibration visits the decoder states of that language."""
    if not directory.is_dir():
        raise CalibrationDataError(f"calibration folder {directory} does not exist")
    skipped = {NOISE_FOLDER} if multilingual else {NOISE_FOLDER, MULTILINGUAL_FOLDER}
    paths = sorted(
        p
        for p in directory.rglob("*")
        if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file() and not skipped & set(p.relative_to(directory).parts)
    )
    if not paths:
        raise CalibrationDataError(f"calibration folder {directory} holds no audio files")
    languages = [_language(p, directory) if multilingual else None for p in paths]
    return [CalibrationClip(p, sha256_file(p), language=lang) for p, lang in zip(paths, languages, strict=True)]


def _language(path: Path, directory: Path) -> str:
    parts = path.relative_to(directory).parts
    return parts[1] if parts[0] == MULTILINGUAL_FOLDER and len(parts) > 2 else "en"


def with_noisy_copies(clips: list[CalibrationClip], noise_dir: Path) -> list[CalibrationClip]:
    """The clean clips, then each again with real noise mixed in (see CALIBRATION_SNRS_DB)."""
    noisy = [
        CalibrationClip(
            c.path,
            c.sha256,
            (
                noise_dir,
                noise.draw_mix(noise_dir, CALIBRATION_SNRS_DB, noise.stable_seed(CALIBRATION_SEED_SALT, c.path.name)),
            ),
            c.language,
        )
        for c in clips
    ]
    return clips + noisy


def check_disjoint(clips: list[CalibrationClip], validation_audio: list[Path]) -> None:
    """Refuse a calibration set that shares a file (by content or by name) with validation."""
    by_hash = {c.sha256: c.path for c in clips}
    stems = {c.path.stem: c.path for c in clips}
    for path in validation_audio:
        clash = by_hash.get(sha256_file(path)) or stems.get(path.stem)
        if clash:
            raise CalibrationDataError(f"calibration clip {clash} is also in the validation set ({path})")


@dataclass
class DecoderState:
    """One decoder-step input, stored compactly: the cache only up to its filled length."""

    small: Feed  # tokens, offset, mask
    self_keys: list[np.ndarray]  # (B, H, Dh, length) per layer
    self_values: list[np.ndarray]  # (B, H, length, Dh) per layer
    cross: Feed  # shared with every other step of the same window (not copied)

    @classmethod
    def capture(cls, feed: Feed, n_layers: int, cross_names: list[str]) -> DecoderState:
        length = int(feed["offset"][0])
        keys, values = [], []
        for layer in range(n_layers):
            k_name, v_name = self_kv_names(layer)
            keys.append(feed[k_name][..., :length].copy())
            values.append(feed[v_name][:, :, :length, :].copy())
        small = {k: feed[k].copy() for k in ("tokens", "offset", "mask")}
        return cls(small, keys, values, {n: feed[n] for n in cross_names})

    def feed(self, dims: ModelDims) -> Feed:
        full: Feed = {**self.small, **self.cross}
        for layer, (k, v) in enumerate(zip(self.self_keys, self.self_values, strict=True)):
            k_name, v_name = self_kv_names(layer)
            full_k = np.zeros((*k.shape[:-1], dims.n_text_ctx), np.float32)
            full_k[..., : k.shape[-1]] = k
            full_v = np.zeros((v.shape[0], v.shape[1], dims.n_text_ctx, v.shape[3]), np.float32)
            full_v[:, :, : v.shape[2], :] = v
            full[k_name], full[v_name] = full_k, full_v
        return full


@dataclass
class RecordedInputs:
    """Graph inputs recorded while transcribing a set of clips."""

    dims: ModelDims
    encoder: list[Feed] = field(default_factory=list)
    decoder: list[DecoderState] = field(default_factory=list)
    sources: list[dict] = field(default_factory=list)  # {"path", "sha256", "seconds"} per clip

    def encoder_feeds(self) -> Iterator[Feed]:
        yield from self.encoder

    def decoder_feeds(self) -> Iterator[Feed]:
        for state in self.decoder:
            yield state.feed(self.dims)


def record_inputs(
    model: WhisperModel,
    clips: list[CalibrationClip],
    root: Path | None = None,
    on_clip: Callable[[CalibrationClip], None] | None = None,
) -> RecordedInputs:
    """Transcribe each clip with the FP32 model and keep every encoder and decoder-step input."""
    if model.runtime.options.precision != "fp32":
        raise ValueError("calibration must observe the FP32 graphs")
    dims = model.checkpoint.dims
    recorded = RecordedInputs(dims)
    cross_names = [name for layer in range(dims.n_text_layer) for name in cross_kv_names(layer)]
    model.runtime.encoder.observer = lambda feed: recorded.encoder.append({"mel": feed["mel"].copy()})
    model.runtime.decoder_observer = lambda feed: recorded.decoder.append(
        DecoderState.capture(feed, dims.n_text_layer, cross_names)
    )
    try:
        for clip in clips:
            samples = clip.load()
            segments, _ = model.transcribe(samples, replace(CALIBRATION_DECODING, language=clip.language))
            for _ in segments:
                pass
            shown = clip.path.relative_to(root) if root else clip.path
            source = {"path": shown.as_posix(), "sha256": clip.sha256, "seconds": len(samples) / SAMPLE_RATE}
            if clip.language:
                source["language"] = clip.language
            if clip.noise:
                source["noise"] = clip.noise[1].to_dict()
            recorded.sources.append(source)
            if on_clip:
                on_clip(clip)
    finally:
        model.runtime.encoder.observer = None
        model.runtime.decoder_observer = None
    return recorded


def sensitivity_clips(clips: list[CalibrationClip]) -> list[CalibrationClip]:
    """The clips the dynamic scheme ranks node sensitivity on: half clean, half their noisy copies
    (the second half of ``with_noisy_copies``). A multilingual model's get the first clip of every
    language, so a node that only one language's decoding strains is ranked too."""
    half = len(clips) // 2
    if half == 0:  # a single clip
        return list(clips)
    first_of_language = {}
    for i, clip in enumerate(clips[:half]):
        first_of_language.setdefault(clip.language, i)
    if len(first_of_language) > 1:
        picked = list(first_of_language.values())
    else:
        picked = list(range(min(SENSITIVITY_CLIPS // 2, half)))
    return [clips[i] for i in picked] + [clips[half + i] for i in picked]


class FeedReader(CalibrationDataReader):
    """onnxruntime's reader protocol over a list of recorded feeds."""

    def __init__(self, feeds: list[Feed]) -> None:
        self._feeds = iter(feeds)

    def get_next(self) -> Feed | None:
        return next(self._feeds, None)


def compute_ranges(
    float_model: Path,
    feeds: Iterator[Feed],
    recipe: QuantRecipe,
    on_chunk: Callable[[int], None] | None = None,
) -> Ranges:
    """Run onnxruntime's calibrator for ``recipe.method`` over the feeds; tensor → (low, high),
    masked attention scores bounded to the real ones (quantize.masked_ranges)."""
    with tempfile.TemporaryDirectory(prefix="amanuensis-calib-") as tmp:
        prepared = prepare_float_model(float_model, get_target(recipe.target), Path(tmp))
        graph = onnx.load(prepared, load_external_data=False).graph
        calibrator = create_calibrator(
            prepared,
            recipe.quantized_op_types,  # None: every float tensor (whole-graph targets)
            augmented_model_path=str(Path(tmp) / "augmented.onnx"),
            calibrate_method=CALIBRATION_METHODS[recipe.method],
            extra_options=recipe.calibrator_options(),
        )
        chunk: list[Feed] = []
        for feed in feeds:
            chunk.append(feed)
            if len(chunk) == CHUNK_RUNS[recipe.method]:
                calibrator.collect_data(FeedReader(chunk))
                if on_chunk:
                    on_chunk(len(chunk))
                chunk = []
        if chunk:
            calibrator.collect_data(FeedReader(chunk))
            if on_chunk:
                on_chunk(len(chunk))
        if recipe.method == "minmse":
            histograms = calibrator.collector.histogram_dict
            del calibrator
            return bound_masked_ranges(graph, min_mse_ranges(histograms, recipe))
        data = calibrator.compute_data().data
        del calibrator
    ranges = {name: (float(np.min(td.range_value[0])), float(np.max(td.range_value[1]))) for name, td in data.items()}
    return bound_masked_ranges(graph, ranges)
