"""Vocabulary counting, pruning, the .npy files and their memory maps."""

from __future__ import annotations

import json
from collections import Counter as PyCounter

import numpy as np
import pyarrow as pa
import pytest

from tests.conftest import gcide_lines
from w2v_dist.config import TokenizerConfig
from w2v_dist.corpus.tokenize import tokenize
from w2v_dist.vocab import Counter, Vocab, VocabError


def _tokens(lines):
    return tokenize(pa.array(lines), TokenizerConfig())[0]


def test_counts_equal_a_plain_count_and_are_sorted():
    lines = gcide_lines(3000)
    tokens = _tokens(lines)
    c = Counter()
    for i in range(0, len(lines), 700):  # several chunks, merged
        c.add(_tokens(lines[i:i + 700]))
    vocab = Vocab.build(c.result(), min_count=3)
    expect = PyCounter(tokens.to_pylist())
    expect = sorted(((w, n) for w, n in expect.items() if n >= 3), key=lambda x: (-x[1], x[0]))
    assert vocab.words.to_pylist() == [w for w, _ in expect]
    assert vocab.counts.tolist() == [n for _, n in expect]
    assert vocab.total_words == sum(n for _, n in expect)


def test_keep_prob_is_word2vec_c_formula():
    table = pa.table({"word": ["a", "b", "c"], "count": [900_000, 1000, 10]})
    v = Vocab.build(table, min_count=1, sample=1e-3)
    t = 1e-3 * v.total_words
    f = v.counts.astype(float)
    np.testing.assert_allclose(v.keep_prob, np.minimum(1, (np.sqrt(f / t) + 1) * t / f), rtol=1e-6)
    assert v.keep_prob[0] < 0.1 and v.keep_prob[2] == 1.0
    assert (Vocab.build(table, min_count=1, sample=0).keep_prob == 1).all()


def test_pruning_bounds_the_table_like_gensim():
    c = Counter(max_vocab_size=1000)
    c.MERGE_EVERY = 500
    rng = np.random.default_rng(0)
    for _ in range(20):
        c.add(pa.array([f"w{i}" for i in rng.zipf(1.3, 2000)]))
    table = c.result()
    assert len(table) <= 1000 and c.min_reduce > 1
    # frequent words survive pruning with their exact count
    counts = dict(zip(table["word"].to_pylist(), table["count"].to_pylist()))
    assert counts["w1"] > counts["w2"] > 0


def test_save_load_maps_files(tmp_path):
    v = Vocab.build(pa.table({"word": ["ä", "b", "cc"], "count": [5, 7, 5]}), min_count=1)
    v.save(str(tmp_path))
    meta = json.loads((tmp_path / "vocab.json").read_text())
    assert meta["size"] == 3 and meta["fingerprint"] == v.meta["fingerprint"]
    w = Vocab.load(str(tmp_path))
    assert w.words.to_pylist() == ["b", "cc", "ä"] and w.counts.tolist() == [7, 5, 5]
    assert isinstance(w.counts, np.memmap) and isinstance(w.keep_prob, np.memmap)
    np.testing.assert_array_equal(w.neg_alias, v.neg_alias)


def test_remote_vocab_is_copied_once_into_the_cache(tmp_path):
    v = Vocab.build(pa.table({"word": ["x", "y"], "count": [3, 2]}), min_count=1)
    v.save("memory://vocabtest/v")
    w = Vocab.load("memory://vocabtest/v", cache_dir=str(tmp_path))
    assert w.words.to_pylist() == ["x", "y"]
    assert list(tmp_path.glob("vocab-*/counts.npy"))


def test_empty_vocabulary_is_a_clear_error():
    with pytest.raises(VocabError, match="--min-count=5"):
        Vocab.build(pa.table({"word": ["a"], "count": [2]}), min_count=5, source="corpus/")
