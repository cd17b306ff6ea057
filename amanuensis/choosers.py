"""Decoding strategies: how the next token of every hypothesis is chosen, and which candidate wins.

Small strategy classes, as openai/whisper's ``decoding.py`` has them: greedy (argmax at
temperature 0, sampling above it; one independent sequence per batch row) and beam search,
behind one ``TokenChooser`` interface that ``decoding.decode_window`` drives step by step.
"""

from __future__ import annotations

import numpy as np

from amanuensis.errors import OptionsError
from amanuensis.runtime import KVCache


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


SAMPLING_BLOCK = 256  # vocabulary entries per block of sample_rows' first level


def sample_rows(weights: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One index per row of ``weights`` (batch, vocab; ≥ 0, not all 0), drawn with probability
    proportional to its weight by inverting the cumulative sum at a uniform draw.

    The cumulative sum is taken in two levels, over block totals and then inside the one block
    the draw falls in: a running sum over the whole vocabulary for every row was most of the
    Python time of a sampled step (0.9 ms of it for 5 × 51864, tiny.en).
    """
    rows, vocab = weights.shape
    blocks = -(-vocab // SAMPLING_BLOCK)
    padded = np.zeros((rows, blocks * SAMPLING_BLOCK), weights.dtype)
    padded[:, :vocab] = weights
    padded = padded.reshape(rows, blocks, SAMPLING_BLOCK)
    block_cumulative = padded.sum(axis=-1).cumsum(axis=-1)
    draws = rng.random(rows) * block_cumulative[:, -1]
    chosen = np.empty(rows, np.int64)
    for k in range(rows):
        block = int(np.searchsorted(block_cumulative[k], draws[k], side="right"))
        if block < blocks:
            below = block_cumulative[k, block - 1] if block else 0.0
            offset = int(np.searchsorted(padded[k, block].cumsum(), draws[k] - below, side="right"))
            if offset < SAMPLING_BLOCK and padded[k, block, offset] > 0:
                chosen[k] = block * SAMPLING_BLOCK + offset
                continue
        chosen[k] = np.flatnonzero(weights[k])[-1]  # float rounding put the draw past the last weight
    return chosen


class TokenChooser:
    """Picks next tokens for every hypothesis; says which hypotheses are done."""

    def reset(self) -> None:
        """Called before each window."""

    def update(self, sampled: list[list[int]], logits: np.ndarray, cache: KVCache) -> bool:
        """Append one token to each sequence in ``sampled``; True when decoding is complete."""
        raise NotImplementedError

    def finalize(self) -> tuple[list[list[int]], list[float], list[list[float]]]:
        """Candidate sequences (without <|endoftext|>), their summed log-probabilities (with
        <|endoftext|>'s) and the log-probability of each of their tokens."""
        raise NotImplementedError


class GreedyChooser(TokenChooser):
    """Argmax at temperature 0, otherwise sampling; one independent sequence per batch row."""

    def __init__(self, eot: int, temperature: float, batch: int, seed: int = 0) -> None:
        self.eot = eot
        self.temperature = temperature
        self.batch = batch
        self.rng = np.random.default_rng(seed)
        self.reset()

    def reset(self) -> None:
        self.sum_logprobs = np.zeros(self.batch)
        self.token_logprobs: list[list[float]] = [[] for _ in range(self.batch)]
        self.finished = np.zeros(self.batch, bool)
        self.sequences: list[list[int]] = []

    def _sample(self, logits: np.ndarray) -> np.ndarray:
        if self.temperature == 0:
            return logits.argmax(axis=-1)
        scaled = logits / self.temperature
        return sample_rows(np.exp(scaled - scaled.max(axis=-1, keepdims=True)), self.rng)

    def update(self, sampled: list[list[int]], logits: np.ndarray, cache: KVCache) -> bool:
        next_tokens = self._sample(logits)
        logprobs = log_softmax(logits)
        for k in range(self.batch):
            if self.finished[k]:
                next_tokens[k] = self.eot
                continue
            self.sum_logprobs[k] += logprobs[k, next_tokens[k]]
            if next_tokens[k] == self.eot:
                self.finished[k] = True
            else:
                sampled[k].append(int(next_tokens[k]))
                self.token_logprobs[k].append(float(logprobs[k, next_tokens[k]]))
        self.sequences = sampled
        self.next_tokens = next_tokens
        return bool(self.finished.all())

    def finalize(self) -> tuple[list[list[int]], list[float], list[list[float]]]:
        return [list(s) for s in self.sequences], self.sum_logprobs.tolist(), self.token_logprobs


class BeamSearchChooser(TokenChooser):
    """Whisper's beam search: keep the best ``beam_size`` live prefixes, collect finished ones."""

    def __init__(self, eot: int, beam_size: int, patience: float | None) -> None:
        self.eot = eot
        self.beam_size = beam_size
        self.max_candidates = round(beam_size * (patience or 1.0))
        if self.max_candidates <= 0:
            raise OptionsError("patience must be positive")
        self.reset()

    def reset(self) -> None:
        self.sum_logprobs = np.zeros(self.beam_size)
        # sequence → (score, its tokens' log-probabilities)
        self.finished: dict[tuple[int, ...], tuple[float, list[float]]] = {}
        self.live: list[list[int]] = []
        self.live_logprobs: list[list[float]] = [[] for _ in range(self.beam_size)]

    def update(self, sampled: list[list[int]], logits: np.ndarray, cache: KVCache) -> bool:
        logprobs = log_softmax(logits)
        candidates: dict[tuple[int, ...], tuple[float, int]] = {}
        for k in range(self.beam_size):
            top = np.argpartition(-logprobs[k], self.beam_size)[: self.beam_size + 1]
            for token in top[np.argsort(-logprobs[k, top])]:
                sequence = (*sampled[k], int(token))
                score = self.sum_logprobs[k] + logprobs[k, token]
                if sequence not in candidates or candidates[sequence][0] < score:
                    candidates[sequence] = (float(score), k)
        kept: list[tuple[tuple[int, ...], float, int]] = []
        for sequence, (score, source) in sorted(candidates.items(), key=lambda kv: -kv[1][0]):
            if sequence[-1] == self.eot:
                if len(self.finished) < self.max_candidates:
                    self.finished.setdefault(sequence[:-1], (score, self.live_logprobs[source]))
            else:
                kept.append((sequence, score, source))
            if len(kept) == self.beam_size:
                break
        order = np.array([source for _, _, source in kept])
        cache.reorder(order)
        self.live_logprobs = [
            [*self.live_logprobs[source], float(logprobs[source, sequence[-1]])] for sequence, _, source in kept
        ]
        for k, (sequence, score, _) in enumerate(kept):
            sampled[k][:] = list(sequence)
            self.sum_logprobs[k] = score
        self.next_tokens = np.array([seq[-1] for seq, _, _ in kept])
        self.live = [list(seq) for seq, _, _ in kept]
        return len(self.finished) >= self.max_candidates

    def finalize(self) -> tuple[list[list[int]], list[float], list[list[float]]]:
        finished = dict(self.finished)
        # Ran out of length before enough beams ended: count the best live ones too.
        for k in np.argsort(-self.sum_logprobs[: len(self.live)]):
            if len(finished) >= self.beam_size:
                break
            finished.setdefault(tuple(self.live[k]), (float(self.sum_logprobs[k]), self.live_logprobs[k]))
        scores = [score for score, _ in finished.values()]
        return [list(s) for s in finished], scores, [logprobs for _, logprobs in finished.values()]


def rank(sequences: list[list[int]], sum_logprobs: list[float], length_penalty: float | None) -> int:
    """Index of the best candidate: log-probability normalised by a length penalty."""
    scores = []
    for seq, logprob in zip(sequences, sum_logprobs, strict=True):
        length = len(seq)
        penalty = length if length_penalty is None else ((5 + length) / 6) ** length_penalty
        scores.append(logprob / max(penalty, 1e-9))
    return int(np.argmax(scores))
