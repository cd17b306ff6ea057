"""Try streaming agreement settings on the calibration clips (never the validation set): record once, replay many.

    python tools/stream_replay.py [--intervals 0.375 0.75] [--spans 0 0.75] [--variants clean white5 babble5]
                                  [--unsure-probability 0.3 0.4 0.5] [--unsure-hold 2 3]
                                  [--max-wer 1.5] [--limit N]

Every calibration clip is streamed once per update interval and variant (clean; "whiteS":
white noise at S dB SNR; "babbleS": three other calibration clips mixed in at S dB SNR), with
each update timed and every call the stream makes to its LocalAgreement recorded. Agreement
settings (agreement span × unsure-word probability × hold span) are then replayed on the
records. A clip the stream never cuts (every calibration clip is shorter than the 20 s cut
point) gets from the replay exactly what a real run with those options would confirm, and
when: the hypotheses do not depend on the agreement until a cut feeds confirmed text back as
the prompt.

For each setting: median delay (as tools/stream_latency.py measures it) and WER against the
offline transcription, per variant and averaged over the variants, sorted by mean delay. The
pick is the lowest mean delay whose mean WER is at most --max-wer points.
"""

from __future__ import annotations

import itertools

import numpy as np
from common import ROOT, model_parser
from tqdm import tqdm

from amanuensis.audio import load_audio
from amanuensis.engine import WhisperModel
from amanuensis.evaluation import read_manifest, word_error_rate
from amanuensis.models import WhisperCheckpoint
from amanuensis.runtime import RuntimeOptions
from amanuensis.streaming import AgreementPolicy, StreamOptions, Word
from amanuensis.streaming.evaluation import StreamRun, offline_words, replay, run_stream, word_delays

CALIBRATION_MANIFESTS = sorted((ROOT / "calibration_audio").glob("*/refs.tsv"))
BABBLE_VOICES = 3  # other calibration clips mixed into a "babble" variant
SEED = 7  # noise and babble choice: fixed, so a rerun replays the same audio


def make_variant(name: str, index: int, clips: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """Clip ``index`` clean, with white noise, or with babble, at the SNR the name ends with."""
    speech = clips[index]
    if name == "clean":
        return speech
    for kind in ("white", "babble"):
        if name.startswith(kind):
            snr_db = float(name[len(kind) :])
            break
    else:
        raise SystemExit(f"stream_replay: unknown variant {name!r} (clean, whiteS, babbleS)")
    if kind == "white":
        noise = rng.normal(0, 1, len(speech))
    else:
        others = rng.choice([i for i in range(len(clips)) if i != index], BABBLE_VOICES, replace=False)
        noise = sum(np.resize(clips[i], len(speech)) for i in others)
    scale = np.sqrt(np.mean(speech**2) / (np.mean(noise**2) + 1e-12) / 10 ** (snr_db / 10))
    return (speech + scale * noise).astype(np.float32)


def main() -> None:
    parser = model_parser(__doc__)
    parser.add_argument("--intervals", type=float, nargs="+", default=[0.375, 0.75], help="update intervals (s)")
    parser.add_argument("--variants", nargs="+", default=["clean", "white5", "babble5"])
    parser.add_argument(
        "--spans", type=float, nargs="+", default=[0.0, 0.75], help="agreement spans (s; 0: consecutive updates only)"
    )
    parser.add_argument("--unsure-probability", type=float, nargs="+", default=[0.3, 0.35, 0.4, 0.45, 0.5])
    parser.add_argument("--unsure-hold", type=float, nargs="+", default=[2.0, 2.5, 3.0, 3.5])
    parser.add_argument("--max-wer", type=float, default=1.5, help="mean WER (points vs offline) a pick may have")
    parser.add_argument("--limit", type=int, default=None, help="first N calibration clips only")
    args = parser.parse_args()
    model = WhisperModel(WhisperCheckpoint.load(args.model), RuntimeOptions(precision="int8", threads=args.threads))
    entries = [entry for manifest in CALIBRATION_MANIFESTS for entry in read_manifest(manifest)][: args.limit]
    clips = [load_audio(entry.audio).samples for entry in entries]
    recordings: dict[tuple[float, str], list[tuple[StreamRun, list[Word]]]] = {}
    for interval, variant in itertools.product(args.intervals, args.variants):
        rng = np.random.default_rng(SEED)  # the same noisy audio at every interval
        options = StreamOptions(policy=AgreementPolicy(update_interval_s=interval))
        recordings[interval, variant] = []
        for index in tqdm(range(len(clips)), desc=f"{interval} s, {variant}", unit="clip"):
            samples = make_variant(variant, index, clips, rng)
            recordings[interval, variant].append(
                (run_stream(model, samples, options), offline_words(model, samples, options))
            )
    unfollowed = sum(run.trimmed for group in recordings.values() for run, _ in group)
    if unfollowed:
        print(f"note: {unfollowed} recordings were trimmed by the stream; their replays are approximate")
    rows = []
    settings = itertools.product(args.intervals, args.spans, args.unsure_probability, args.unsure_hold)
    for interval, span, probability, hold in settings:
        policy = AgreementPolicy(
            update_interval_s=interval, agreement_span_s=span, unsure_probability=probability, unsure_hold_s=hold
        )
        options = StreamOptions(policy=policy)
        per_variant = []
        for variant in args.variants:
            group = recordings[interval, variant]
            runs = [replay(run, options) for run, _ in group]
            delays = [d for run, (_, words) in zip(runs, group, strict=True) for d in word_delays(run, words)]
            offline = ["".join(w.text for w in words) for _, words in group]
            per_variant.append((float(np.median(delays)), word_error_rate(offline, [run.text for run in runs])))
        mean_delay = float(np.mean([d for d, _ in per_variant]))
        mean_wer = float(np.mean([w for _, w in per_variant]))
        rows.append((mean_delay, mean_wer, interval, span, probability, hold, per_variant))
    rows.sort(key=lambda row: row[:2])
    pick = next((row for row in rows if row[1] <= args.max_wer), None)
    header = " | ".join(f"{v} delay / WER" for v in args.variants)
    print(f"interval | span | unsure below | hold | mean delay | mean WER | {header}")
    for row in rows:
        mean_delay, mean_wer, interval, span, probability, hold, per_variant = row
        cells = " | ".join(f"{d:.2f} s / {w:.2f}" for d, w in per_variant)
        mark = "  ← pick" if row is pick else ""
        setting = f"{interval:.3g} s | {span:.3g} s | {probability:.2f} | {hold:.1f} s"
        print(f"{setting} | {mean_delay:.2f} s | {mean_wer:.2f} | {cells}{mark}")
    if pick is None:
        print(f"no setting has a mean WER ≤ {args.max_wer}")


if __name__ == "__main__":
    main()
