"""Training examples from token ids, vectorised with numpy: subsampling, dynamic windows,
negatives. No Python loop per token.

word2vec.c semantics:
- a word is kept with probability ``min(1, (sqrt(f/t) + 1) * t/f)`` (``f`` its corpus frequency,
  ``t`` = ``--sample``); the table comes from the vocabulary (``keep_prob.npy``);
- each kept word draws its window ``b`` uniformly in ``[1, window]`` and sees the kept words at
  most ``b`` positions away inside its sentence;
- skip-gram trains the pair (input = context word, output = centre word), as word2vec.c does;
  CBOW trains (input = mean of the context words, output = centre word);
- negatives are drawn from unigram^0.75 (an exact alias table), ``negative`` per example.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from w2v_dist.corpus.tokenize import Tokenized


@dataclass
class Examples:
    """A chunk of training examples, in corpus order.

    Skip-gram: ``inputs`` has shape (n,) — one context word per example.
    CBOW: ``inputs`` has shape (n, 2*window), padded with -1.
    """

    inputs: np.ndarray
    outputs: np.ndarray  # (n,) int32 centre words
    negatives: np.ndarray  # (n, negative) int32
    words: int  # in-vocabulary words this chunk consumed (for learning-rate progress)

    def __len__(self) -> int:
        return len(self.outputs)

    @classmethod
    def empty(cls, model: str, window: int, negative: int) -> "Examples":
        shape = (0,) if model == "sg" else (0, 2 * window)
        return cls(np.zeros(shape, np.int32), np.zeros(0, np.int32), np.zeros((0, negative), np.int32), 0)

    def slice(self, start: int, stop: int) -> "Examples":
        return Examples(self.inputs[start:stop], self.outputs[start:stop], self.negatives[start:stop], 0)


def subsample(tok: Tokenized, keep_prob: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    keep = rng.random(len(tok.ids), dtype=np.float32) < keep_prob[tok.ids]
    return tok.ids[keep], tok.sentence[keep]


def context_matrix(sentence: np.ndarray, window: int, rng: np.random.Generator) -> np.ndarray:
    """Positions of each word's context words, shape (n, 2*window), -1 where there is none.

    Column order: offsets -window..-1, +1..+window.
    """
    n = len(sentence)
    reach = rng.integers(1, window + 1, size=n)
    pos = np.arange(n)
    offsets = np.r_[np.arange(-window, 0), np.arange(1, window + 1)]
    ctx = pos[:, None] + offsets[None, :]
    inside = (ctx >= 0) & (ctx < n) & (np.abs(offsets)[None, :] <= reach[:, None])
    safe = np.clip(ctx, 0, max(n - 1, 0))
    inside &= sentence[safe] == sentence[:, None]
    return np.where(inside, ctx, -1)


class NegativeSampler:
    """Exact draws from unigram^0.75 with Walker's alias table (two arrays from the vocabulary)."""

    def __init__(self, prob: np.ndarray, alias: np.ndarray):
        self.prob = prob
        self.alias = alias

    def draw(self, rng: np.random.Generator, shape) -> np.ndarray:
        idx = rng.integers(0, len(self.prob), size=shape, dtype=np.int32)
        u = rng.random(shape, dtype=np.float32)
        return np.where(u < self.prob[idx], idx, self.alias[idx]).astype(np.int32, copy=False)

    @staticmethod
    def build(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Vose's alias method: ``prob`` (float32) and ``alias`` (int32) for ``weights``."""
        n = len(weights)
        p = weights.astype(np.float64) * n / weights.sum()
        prob = np.ones(n, dtype=np.float64)
        alias = np.arange(n, dtype=np.int64)
        small = list(np.flatnonzero(p < 1.0))
        large = list(np.flatnonzero(p >= 1.0))
        # One pass per vocabulary entry at build time (not per token): runs once per run.
        while small and large:
            s, l = small.pop(), large.pop()
            prob[s], alias[s] = p[s], l
            p[l] -= 1.0 - p[s]
            (small if p[l] < 1.0 else large).append(l)
        return prob.astype(np.float32), alias.astype(np.int32)


def make_examples(tok: Tokenized, model: str, window: int, keep_prob: np.ndarray,
                  sampler: NegativeSampler, negative: int, rng: np.random.Generator) -> Examples:
    ids, sentence = subsample(tok, keep_prob, rng)
    ctx = context_matrix(sentence, window, rng)
    if model == "sg":
        centre, col = np.nonzero(ctx >= 0)  # row-major: examples stay in corpus order
        inputs = ids[ctx[centre, col]]
        outputs = ids[centre]
    else:
        has = (ctx >= 0).any(axis=1)
        ctx = ctx[has]
        inputs = np.where(ctx >= 0, ids[np.maximum(ctx, 0)], -1).astype(np.int32)
        outputs = ids[has]
    negatives = sampler.draw(rng, (len(outputs), negative))
    return Examples(inputs.astype(np.int32, copy=False), outputs.astype(np.int32, copy=False),
                    negatives, tok.raw_words)
