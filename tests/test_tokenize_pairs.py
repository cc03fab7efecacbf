"""Tokenization, sentence boundaries, subsampling, windows and negatives."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pyarrow as pa

from w2v_dist.config import TokenizerConfig
from w2v_dist.corpus.tokenize import Tokenized, encode, tokenize
from w2v_dist.pairs import NegativeSampler, context_matrix, make_examples


def test_tokenize_unicode_lowercase_and_split():
    col = pa.array(["Ünïcode WORDS, split—on: punctuation!", None, "", "naïve café_au_lait 42"])
    tokens, rows = tokenize(col, TokenizerConfig())
    assert tokens.to_pylist() == ["ünïcode", "words", "split", "on", "punctuation", "naïve", "café_au_lait", "42"]
    assert rows.tolist() == [0, 0, 0, 0, 0, 3, 3, 3]


def test_tokenize_list_column_and_no_lowercase():
    col = pa.array([["The", "Cat"], [], None, ["sat"]], pa.list_(pa.string()))
    tokens, rows = tokenize(col, TokenizerConfig(lowercase=False))
    assert tokens.to_pylist() == ["The", "Cat", "sat"] and rows.tolist() == [0, 0, 3]
    tokens, _ = tokenize(col, TokenizerConfig())
    assert tokens.to_pylist() == ["the", "cat", "sat"]


def test_encode_drops_unknown_and_caps_sentences():
    vocab = pa.array(["a", "b", "c"])
    col = pa.array(["a x b c", "c c c c c c c", "zzz", "b"])
    tok = encode(col, vocab, TokenizerConfig(max_sentence_length=3))
    assert tok.ids.tolist() == [0, 1, 2, 2, 2, 2, 2, 2, 2, 2, 1]
    # row 1 (7 words) is cut into 3 + 3 + 1; row 0 keeps its 3 known words together
    starts = np.flatnonzero(np.r_[True, tok.sentence[1:] != tok.sentence[:-1]])
    assert starts.tolist() == [0, 3, 6, 9, 10]
    assert tok.raw_words == 11


def test_windows_stay_inside_sentences_and_within_reach():
    rng = np.random.default_rng(0)
    sentence = np.repeat(np.arange(50), rng.integers(1, 12, 50))
    ctx = context_matrix(sentence, 5, np.random.default_rng(1))
    rows, cols = np.nonzero(ctx >= 0)
    assert (sentence[ctx[rows, cols]] == sentence[rows]).all()
    assert (np.abs(ctx[rows, cols] - rows) <= 5).all() and (ctx[rows, cols] != rows).all()
    # reach is drawn per word in [1, window]: symmetric around the word, every reach appears
    reach = np.abs(np.where(ctx >= 0, ctx - np.arange(len(ctx))[:, None], 0)).max(axis=1)
    assert set(np.unique(reach)) <= set(range(0, 6))


def test_subsampling_keeps_the_expected_fraction():
    ids = np.zeros(200_000, np.int32)
    ids[::2] = 1
    tok = Tokenized(ids, np.zeros(len(ids), np.int64), len(ids))
    keep_prob = np.array([0.25, 1.0], np.float32)
    sampler = NegativeSampler(*NegativeSampler.build(np.array([1.0, 1.0])))
    ex = make_examples(tok, "cbow", 2, keep_prob, sampler, 1, np.random.default_rng(0))
    kept = Counter(ex.outputs.tolist())
    assert abs(kept[0] / 100_000 - 0.25) < 0.01 and kept[1] == 100_000


def test_alias_sampler_draws_unigram_075():
    counts = np.array([1000, 300, 50, 5, 1], dtype=np.float64)
    weights = counts ** 0.75
    sampler = NegativeSampler(*NegativeSampler.build(weights))
    draws = sampler.draw(np.random.default_rng(0), 1_000_000)
    freq = np.bincount(draws, minlength=len(counts)) / len(draws)
    np.testing.assert_allclose(freq, weights / weights.sum(), atol=2e-3)


def test_skipgram_examples_are_context_to_centre_pairs():
    ids = np.arange(6, dtype=np.int32)
    tok = Tokenized(ids, np.array([0, 0, 0, 1, 1, 1]), 6)
    sampler = NegativeSampler(*NegativeSampler.build(np.ones(6)))
    ex = make_examples(tok, "sg", 1, np.ones(6, np.float32), sampler, 3, np.random.default_rng(0))
    pairs = sorted(zip(ex.inputs.tolist(), ex.outputs.tolist()))
    assert pairs == [(0, 1), (1, 0), (1, 2), (2, 1), (3, 4), (4, 3), (4, 5), (5, 4)]
    assert ex.negatives.shape == (8, 3) and ex.words == 6
