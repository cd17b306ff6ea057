"""Decoding one 30 s window, in the spirit of openai/whisper's ``decoding.py``.

``decode_window`` runs the fixed-batch decoder step by step: the prompt and start-of-
transcript tokens first (recording the no-speech probability at <|startoftranscript|>), then
sampled tokens shaped by logit filters (blank/suppressed tokens, timestamp rules) and chosen
by a strategy (greedy/sampling or beam search), then ranked.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from amanuensis.choosers import BeamSearchChooser, GreedyChooser, TokenChooser, log_softmax, rank
from amanuensis.errors import OptionsError
from amanuensis.runtime import CrossKV, Decoder, KVCache, ModelRuntime
from amanuensis.tokenizer import TIMESTAMP_PRECISION_S, Tokenizer

MAX_INITIAL_TIMESTAMP_S = 1.0  # the first timestamp may not be later than this


@dataclass(frozen=True)
class DecodingOptions:
    task: str = "transcribe"  # "transcribe" or "translate" (X → English, multilingual only)
    language: str | None = None  # language code; None detects it (multilingual models)
    temperature: float = 0.0  # 0 = argmax/beam search; > 0 samples
    sample_len: int | None = None  # max tokens to generate; default half the text context
    best_of: int | None = None  # independent samples at temperature > 0, best one kept
    beam_size: int | None = None  # beams at temperature 0; None = greedy
    patience: float | None = None  # beam search: finished candidates wanted = beam × patience
    length_penalty: float | None = None  # None: rank by logprob / length; α: Google NMT penalty
    prompt: Sequence[int] = ()  # previous-context tokens (text and timestamps), not including <|startofprev|>
    suppress_tokens: Sequence[int] | None = (-1,)  # ids to never emit; -1 = Whisper's non-speech set
    suppress_blank: bool = True  # forbid a blank or <|endoftext|> as the first sampled token
    without_timestamps: bool = False  # <|notimestamps|> mode: one segment per window
    max_initial_timestamp: float | None = MAX_INITIAL_TIMESTAMP_S  # seconds


@dataclass(frozen=True)
class DecodingResult:
    tokens: list[int]  # sampled tokens, timestamps included, without <|endoftext|>
    text: str  # decoded text of the ordinary tokens
    language: str  # language used (given or detected)
    avg_logprob: float  # sum of token log-probabilities / (tokens + 1)
    token_logprobs: list[float]  # log-probability of each of ``tokens`` when it was chosen
    no_speech_prob: float  # probability of <|nospeech|> at <|startoftranscript|>
    temperature: float  # temperature this result was sampled at
    compression_ratio: float  # raw / zlib-compressed text bytes: high means repetition
    language_probs: dict[str, float] = field(default_factory=dict)  # when detected


PHRASE_WORDS = 8  # longest phrase looked for by longest_run


def longest_run(text: str) -> int:
    """How many times in a row the most repeated phrase (1 to PHRASE_WORDS words, case and
    punctuation ignored) occurs: a decoding loop ("with the picture, with the picture, …") that is
    too short or varied for the compression ratio to catch."""
    words = ["".join(c for c in w.lower() if c.isalnum()) for w in text.split()]
    words = [w for w in words if w]
    best = 1 if words else 0
    for size in range(1, PHRASE_WORDS + 1):
        for start in range(size):
            run = 1
            for i in range(start + size, len(words) - size + 1, size):
                run = run + 1 if words[i : i + size] == words[i - size : i] else 1
                best = max(best, run)
    return best


def compression_ratio(text: str) -> float:
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


# --------------------------------------------------------------------------- logit filters


class LogitFilter:
    """Edits logits (batch, vocab) in place given each hypothesis' sampled tokens so far."""

    def apply(self, logits: np.ndarray, sampled: list[list[int]]) -> None:
        raise NotImplementedError


class SuppressBlank(LogitFilter):
    """At the first sampled position, forbid a leading space or an immediate end."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.blocked = [*tokenizer.encode(" "), tokenizer.eot]

    def apply(self, logits: np.ndarray, sampled: list[list[int]]) -> None:
        if not sampled[0]:
            logits[:, self.blocked] = -np.inf


class SuppressTokens(LogitFilter):
    def __init__(self, token_ids: Sequence[int]) -> None:
        self.token_ids = list(token_ids)

    def apply(self, logits: np.ndarray, sampled: list[list[int]]) -> None:
        logits[:, self.token_ids] = -np.inf


class ApplyTimestampRules(LogitFilter):
    """Whisper's timestamp grammar: paired, non-decreasing, starting the window early."""

    def __init__(self, tokenizer: Tokenizer, max_initial_timestamp_index: int | None) -> None:
        self.eot = tokenizer.eot
        self.no_timestamps = tokenizer.no_timestamps
        self.begin = tokenizer.timestamp_begin
        self.max_initial_timestamp_index = max_initial_timestamp_index

    def apply(self, logits: np.ndarray, sampled: list[list[int]]) -> None:
        logits[:, self.no_timestamps] = -np.inf
        for k, seq in enumerate(sampled):
            last_was_timestamp = len(seq) >= 1 and seq[-1] >= self.begin
            penultimate_was_timestamp = len(seq) < 2 or seq[-2] >= self.begin
            if last_was_timestamp:
                if penultimate_was_timestamp:  # a pair just closed: text or end must follow
                    logits[k, self.begin :] = -np.inf
                else:  # an opening timestamp: no text may follow directly
                    logits[k, : self.eot] = -np.inf
            timestamps = [t for t in seq if t >= self.begin]
            if timestamps:
                # Never go back in time; a segment must have non-zero length.
                closing_pair = last_was_timestamp and not penultimate_was_timestamp
                last = timestamps[-1] if closing_pair else timestamps[-1] + 1
                logits[k, self.begin : last] = -np.inf
        if not sampled[0]:
            logits[:, : self.begin] = -np.inf  # the window starts with a timestamp
            if self.max_initial_timestamp_index is not None:
                logits[:, self.begin + self.max_initial_timestamp_index + 1 :] = -np.inf
        # Prefer a timestamp when all timestamps together outweigh the best text token.
        logprobs = log_softmax(logits)
        for k in range(logits.shape[0]):
            stamp_mass = np.logaddexp.reduce(logprobs[k, self.begin :])
            if stamp_mass > logprobs[k, : self.begin].max():
                logits[k, : self.begin] = -np.inf


# ------------------------------------------------------------------------- the main loop


def resolve_suppress_tokens(options: DecodingOptions, tokenizer: Tokenizer) -> list[int]:
    ids = set(options.suppress_tokens or ())
    if -1 in ids:
        ids.discard(-1)
        ids.update(tokenizer.non_speech_tokens)
    ids.update(
        t for t in (
            tokenizer.transcribe, tokenizer.translate, tokenizer.sot,
            tokenizer.sot_prev, tokenizer.sot_lm, tokenizer.no_speech,
        )
    )  # fmt: skip
    return sorted(ids)


def detect_language(runtime: ModelRuntime, tokenizer: Tokenizer, cross: CrossKV) -> tuple[str, dict[str, float]]:
    """Language whose token is most likely right after <|startoftranscript|>."""
    decoder = runtime.decoder(1)
    logits = decoder.step(np.array([tokenizer.sot]), decoder.new_cache(), cross)[0]
    codes = list(tokenizer.language_tokens)
    ids = np.array([tokenizer.language_tokens[c] for c in codes])
    probs = np.exp(log_softmax(logits[ids]))
    ranked = dict(sorted(zip(codes, probs.tolist(), strict=True), key=lambda kv: -kv[1]))
    return next(iter(ranked)), ranked


def _initial_tokens(options: DecodingOptions, tokenizer: Tokenizer, language: str, n_ctx: int) -> list[int]:
    tokens = tokenizer.sot_sequence(language, options.task)
    if options.without_timestamps:
        tokens.append(tokenizer.no_timestamps)
    if options.prompt:
        prompt = list(options.prompt)[-(n_ctx // 2 - 1) :]
        tokens = [tokenizer.sot_prev, *prompt, *tokens]
    return tokens


def _logit_filters(options: DecodingOptions, tokenizer: Tokenizer) -> list[LogitFilter]:
    filters: list[LogitFilter] = []
    if options.suppress_blank:
        filters.append(SuppressBlank(tokenizer))
    if options.suppress_tokens:
        filters.append(SuppressTokens(resolve_suppress_tokens(options, tokenizer)))
    if not options.without_timestamps:
        max_index = None
        if options.max_initial_timestamp is not None:
            max_index = round(options.max_initial_timestamp / TIMESTAMP_PRECISION_S)
        filters.append(ApplyTimestampRules(tokenizer, max_index))
    return filters


def _continue(
    decoder: Decoder,
    chooser: TokenChooser,
    filters: list[LogitFilter],
    logits: np.ndarray,
    cache: KVCache,
    cross: CrossKV,
    sample_len: int,
) -> tuple[list[list[int]], list[float], list[list[float]]]:
    """Sample up to ``sample_len`` tokens after the prefilled ``cache`` whose last logits are ``logits``."""
    sampled: list[list[int]] = [[] for _ in range(decoder.batch)]
    for _ in range(sample_len):
        logits = logits.astype(np.float32, copy=True)
        for logit_filter in filters:
            logit_filter.apply(logits, sampled)
        done = chooser.update(sampled, logits, cache)
        if done or cache.length >= cache.capacity:
            break
        logits = decoder.step(chooser.next_tokens, cache, cross)
    return chooser.finalize()


def decode_window(
    runtime: ModelRuntime,
    tokenizer: Tokenizer,
    cross: CrossKV,
    options: DecodingOptions,
    language: str,
    language_probs: dict[str, float] | None = None,
) -> DecodingResult:
    """Decode one window whose encoder output is ``cross``."""
    dims = runtime.checkpoint.dims
    if options.temperature == 0 and options.best_of is not None:
        raise OptionsError("best_of applies only to sampling (temperature > 0)")
    if options.temperature > 0 and options.beam_size is not None:
        raise OptionsError("beam_size applies only at temperature 0")
    use_beam = options.beam_size is not None and options.beam_size > 1
    samples = 1 if use_beam or options.temperature == 0 else (options.best_of or 1)
    # Samples (best_of) run as the rows of one batch where every batch size shares one session
    # (the CPU EP). Elsewhere a batch-5 session would be compiled and hold its own copy of the
    # weights for the windows that fall back to sampling, so they run one after another on the
    # batch-1 decoder from one prefilled cache.
    in_one_batch = runtime.batches_share_a_session
    batch = options.beam_size if use_beam else (samples if in_one_batch else 1)
    runs = 1 if in_one_batch else samples
    decoder: Decoder = runtime.decoder(batch)
    cache = decoder.new_cache()
    chooser: TokenChooser = (
        BeamSearchChooser(tokenizer.eot, batch, options.patience)
        if use_beam
        else GreedyChooser(tokenizer.eot, options.temperature, batch)
    )
    filters = _logit_filters(options, tokenizer)

    initial = _initial_tokens(options, tokenizer, language, dims.n_text_ctx)
    sot_index = initial.index(tokenizer.sot)
    sample_len = options.sample_len or dims.n_text_ctx // 2
    # The prompt up to <|startoftranscript|> in prefill blocks (its logits give the no-speech
    # probability), the task tokens after it one step each.
    prefill = runtime.prefill() if sot_index > 0 else None
    if prefill is not None:
        logits = prefill(initial[: sot_index + 1], cache, cross)
    else:
        for token in initial[: sot_index + 1]:
            logits = decoder.step(np.full(batch, token), cache, cross)
    no_speech_prob = float(np.exp(log_softmax(logits[0])[tokenizer.no_speech]))
    for token in initial[sot_index + 1 :]:
        logits = decoder.step(np.full(batch, token), cache, cross)

    sequences: list[list[int]] = []
    sum_logprobs: list[float] = []
    token_logprobs: list[list[float]] = []
    for run in range(runs):
        chooser.reset()
        run_cache = cache if run == runs - 1 else cache.copy()
        found, scores, per_token = _continue(decoder, chooser, filters, logits, run_cache, cross, sample_len)
        sequences += found
        sum_logprobs += scores
        token_logprobs += per_token
    best = rank(sequences, sum_logprobs, options.length_penalty)
    tokens = sequences[best]
    text = tokenizer.decode(tokens)
    return DecodingResult(
        tokens=tokens,
        text=text,
        language=language,
        avg_logprob=sum_logprobs[best] / (len(tokens) + 1),
        token_logprobs=token_logprobs[best],
        no_speech_prob=no_speech_prob,
        temperature=options.temperature,
        compression_ratio=compression_ratio(text),
        language_probs=language_probs or {},
    )
