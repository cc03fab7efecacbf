import os

import numpy as np
import pyarrow.compute as pc
import pytest

from w2v_dist.synthetic import FAMILIES, generate


def _tokens(sentences):
    return pc.list_flatten(pc.split_pattern(sentences, " ")).to_numpy(zero_copy_only=False)


@pytest.fixture(scope="module")
def small():
    return generate(n_tokens=300_000, seed=0)


def test_same_seed_same_corpus():
    a, b, c = generate(20_000, seed=3), generate(20_000, seed=3), generate(20_000, seed=4)
    assert a.sentences.equals(b.sentences)
    assert (a.analogies, a.similarity, a.probes) == (b.analogies, b.similarity, b.probes)
    assert not a.sentences.equals(c.sentences)
    assert a.analogies != c.analogies


@pytest.mark.parametrize("n_tokens", [1000, 50_000, 300_000])
def test_token_count_and_format(n_tokens):
    corpus = generate(n_tokens, seed=1)
    n = len(_tokens(corpus.sentences))
    assert n_tokens <= n < n_tokens + 30  # cut after the sentence that reaches n_tokens
    assert pc.all(pc.match_substring_regex(corpus.sentences, r"^[a-z]+( [a-z]+)*$")).as_py()


def test_too_small_is_refused():
    with pytest.raises(ValueError, match="at least 1000"):
        generate(999)


def test_benchmarks_parse_and_use_corpus_words(small, tmp_path):
    words, counts = np.unique(_tokens(small.sentences), return_counts=True)
    count = dict(zip(words, counts))
    paths = small.write(str(tmp_path / "bench"))
    assert sorted(paths) == ["analogies", "similarity"]

    with open(paths["analogies"]) as f:
        lines = f.read().splitlines()
    sections = [ln[2:] for ln in lines if ln.startswith(": ")]
    assert sections == [s[0] for fam in FAMILIES for s in fam.sections]
    questions = [ln.split() for ln in lines if not ln.startswith(":")]
    assert len(questions) >= 100 * len(sections)
    for q in questions:
        assert len(q) == 4 and len(set(q)) == 4
        assert all(count.get(w, 0) >= 5 for w in q), q  # survives min_count=5 even at 300k tokens

    with open(paths["similarity"]) as f:
        lines = f.read().splitlines()
    assert lines[0].startswith("#")
    scores = set()
    for ln in lines[1:]:
        w1, w2, score = ln.split("\t")
        assert w1 in count and w2 in count and w1 != w2
        assert 0 <= float(score) <= 10
        scores.add(float(score))
    assert len(scores) >= 3  # graded, not just related/unrelated
    assert all(p in count for p in small.probes)


def test_write_creates_the_directory(small, tmp_path):
    paths = small.write(str(tmp_path / "a" / "b"))
    assert all(os.path.isfile(p) for p in paths.values())


@pytest.mark.parametrize("sg, alpha, min_accuracy", [(1, 0.025, 0.7), (0, 0.05, 0.3)])
def test_gensim_learns_the_planted_structure(small, tmp_path, sg, alpha, min_accuracy):
    # Measured at 300k tokens, 5 epochs, dim 32 over seeds 0-3: skip-gram 0.99 analogy accuracy,
    # CBOW 0.59-0.70, Spearman 0.84-0.89; chance is about 1/30 (one entity among a role's ~30).
    gensim = pytest.importorskip("gensim")
    paths = small.write(str(tmp_path))
    sentences = [s.split() for s in small.sentences.to_pylist()]
    model = gensim.models.Word2Vec(sentences, vector_size=32, window=5, negative=5, sample=1e-3, min_count=5,
                                   epochs=5, sg=sg, alpha=alpha, workers=1, seed=0)
    accuracy, _ = model.wv.evaluate_word_analogies(paths["analogies"])
    _, spearman, oov = model.wv.evaluate_word_pairs(paths["similarity"])
    assert accuracy > min_accuracy
    assert spearman.statistic > 0.6
    assert oov == 0
