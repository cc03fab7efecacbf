"""evaluate.py: the same numbers as gensim's evaluate_word_analogies / evaluate_word_pairs."""

from __future__ import annotations

import doctest
import gzip
import itertools
import json
import logging
import re
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import DATA, shared_file
from w2v_dist import evaluate as evaluate_module
from w2v_dist.evaluate import _rank, evaluate_analogies, evaluate_similarity, format_report
from w2v_dist.vectors import Vectors

QUESTIONS = DATA / "questions-words.txt"
WORDSIM = DATA / "wordsim353.tsv"


def data_file(path: Path) -> str:
    return str(shared_file(path))


def to_gensim(vecs: Vectors):
    kv = pytest.importorskip("gensim.models").KeyedVectors(vecs.dim)
    kv.add_vectors(vecs.words, vecs.vectors)
    return kv


def gensim_analogies(kv, uri: str, **kw) -> dict:
    score, sections = kv.evaluate_word_analogies(uri, **kw)
    return {"accuracy": score, "sections": [(s["section"], len(s["correct"]), len(s["incorrect"])) for s in sections]}


def ours_as_gensim(result: dict) -> dict:
    rows = [(s["section"], s["correct"], s["incorrect"]) for s in result["sections"]]
    return {"accuracy": result["accuracy"],
            "sections": rows + [("Total accuracy", result["correct"], result["incorrect"])]}


@pytest.fixture(scope="module")
def trained() -> Vectors:
    """Real but weak vectors: gensim, 1 epoch over the first 20k GCIDE sentences (~0.5 s)."""
    gensim_models = pytest.importorskip("gensim.models")
    path = Path(data_file(DATA / "gcide_en.txt.gz"))
    with gzip.open(path, "rt", encoding="utf-8") as f:
        sentences = [[w for w in re.split(r"\W+", line.lower()) if w] for line in itertools.islice(f, 20_000)]
    wv = gensim_models.Word2Vec(sentences, vector_size=32, min_count=5, epochs=1, workers=1, seed=1).wv
    return Vectors(wv.index_to_key, wv.vectors)


@pytest.fixture(scope="module")
def planted() -> Vectors:
    """Vectors where the Google analogies mostly hold: for each question pair (x, y) of a section,
    y = x + the section's offset + noise. Case variants of some words sit near them (gensim skips
    those as answers), and the last rows fall outside restrict_vocab (OOV)."""
    rng = np.random.default_rng(0)
    d = 24
    offsets, vec = {}, {}
    section = None
    for line in Path(data_file(QUESTIONS)).read_text(encoding="utf-8").splitlines():
        if line.startswith(": "):
            section = line[2:]
            offsets[section] = rng.standard_normal(d)
            continue
        a, b, c, e = line.split()
        for x, y in ((a, b), (c, e)):
            vec.setdefault(x, rng.standard_normal(d))
            vec.setdefault(y, vec[x] + offsets[section] + 0.9 * rng.standard_normal(d))
    words = list(vec)
    rng.shuffle(words)
    for w in words[:150]:  # a case variant, close by: before the word (it becomes canonical) or after
        variant = w.lower() if w != w.lower() else w.capitalize()
        vec[variant] = vec[w] + 0.05 * rng.standard_normal(d)
        words.insert(words.index(w) + int(rng.integers(0, 2)), variant)
    noise = [f"noise{i}" for i in range(1000)]
    vec.update((w, rng.standard_normal(d)) for w in noise)
    words = words[:-40] + noise + words[-40:]
    return Vectors(words, np.array([vec[w] for w in words], np.float32))


def test_doctests():
    assert doctest.testmod(evaluate_module).failed == 0


# ---- analogies ----------------------------------------------------------------------------------

def test_analogies_match_gensim_on_real_questions(planted, caplog):
    uri = data_file(QUESTIONS)
    restrict = len(planted) - 40
    ours = evaluate_analogies(planted, uri, restrict_vocab=restrict)
    with caplog.at_level(logging.INFO, logger="gensim.models.keyedvectors"):
        expected = gensim_analogies(to_gensim(planted), uri, restrict_vocab=restrict)
    assert ours_as_gensim(ours) == expected
    assert 0.2 < ours["accuracy"] < 0.9  # non-trivial: right and wrong answers both common
    assert ours["questions"] == 19544 and ours["oov"] == 19544 - ours["correct"] - ours["incorrect"] > 0
    assert f"Quadruplets with out-of-vocabulary words: {100 * ours['oov_ratio']:.1f}%" in caplog.text
    assert sum(s["oov"] for s in ours["sections"]) == ours["oov"]


def test_analogies_case_sensitive_match_gensim(planted):
    uri = data_file(QUESTIONS)
    ours = evaluate_analogies(planted, uri, restrict_vocab=None, case_insensitive=False)
    assert ours_as_gensim(ours) == gensim_analogies(to_gensim(planted), uri, case_insensitive=False)


def test_analogies_match_gensim_on_a_trained_model(trained):
    uri = data_file(QUESTIONS)
    ours = evaluate_analogies(trained, uri)
    assert ours_as_gensim(ours) == gensim_analogies(to_gensim(trained), uri)
    assert ours["incorrect"] > 0


@pytest.mark.parametrize("case_insensitive", [True, False])
def test_case_variants_and_tiny_vocab_match_gensim(tmp_path, case_insensitive):
    """Few words, many case variants: the top 5 is often full of variants of the query words,
    which exercises gensim's skip-them and last-one-looked-at rules."""
    rng = np.random.default_rng(1)
    words = ["ab", "Ab", "aB", "AB", "cd", "Cd", "CD", "ef", "gh", "Gh", "ij", "kl", "mn", "op"]
    vecs = Vectors(words, rng.standard_normal((len(words), 3)).astype(np.float32))
    pool = words + ["zz"]  # zz: out of vocabulary
    lines = []
    for s in range(3):
        lines.append(f": part-{s}")
        lines += [" ".join(rng.choice(pool, 4)) for _ in range(400)]
    lines.insert(5, "too few words")
    (tmp_path / "q.txt").write_text("\n".join(lines) + "\n")
    uri = str(tmp_path / "q.txt")
    for restrict in (None, 10):
        ours = evaluate_analogies(vecs, uri, restrict_vocab=restrict, case_insensitive=case_insensitive)
        expected = gensim_analogies(to_gensim(vecs), uri, restrict_vocab=restrict or 300000,
                                    case_insensitive=case_insensitive)
        assert ours_as_gensim(ours) == expected
        assert ours["questions"] == 1200


def test_analogies_are_batched_not_per_question(planted, monkeypatch):
    """Several batches give the same answers as one."""
    uri = data_file(QUESTIONS)
    whole = evaluate_analogies(planted, uri)
    monkeypatch.setattr(evaluate_module, "_BATCH_SCORES", len(planted) * 3000)
    assert evaluate_analogies(planted, uri) == whole


# ---- similarity ---------------------------------------------------------------------------------

def test_similarity_matches_gensim_on_wordsim(trained):
    uri = data_file(WORDSIM)
    ours = evaluate_similarity(trained, uri)
    pearson, spearman, oov_percent = to_gensim(trained).evaluate_word_pairs(uri)
    assert ours["pearson"] == pytest.approx(pearson[0], abs=1e-6)
    assert ours["spearman"] == pytest.approx(spearman[0], abs=1e-6)
    assert 100 * ours["oov_ratio"] == pytest.approx(oov_percent)
    assert ours["pairs"] + ours["oov"] == 353


@pytest.mark.parametrize("case_insensitive", [True, False])
def test_similarity_with_case_variants_and_ties_matches_gensim(tmp_path, case_insensitive):
    uri = data_file(WORDSIM)
    rng = np.random.default_rng(2)
    pairs = [line.split("\t")[:2] for line in Path(uri).read_text().splitlines() if not line.startswith("#")]
    words = list(dict.fromkeys(w for pair in pairs for w in pair))
    variants = [v for v in (w.capitalize() for w in words[:60]) if v not in words]
    words = words[:300] + variants + words[300:]  # case variants, then rarer words
    vecs = Vectors(words, rng.standard_normal((len(words), 8)).astype(np.float32))
    ours = evaluate_similarity(vecs, uri, restrict_vocab=330, case_insensitive=case_insensitive)
    pearson, spearman, oov_percent = to_gensim(vecs).evaluate_word_pairs(
        uri, restrict_vocab=330, case_insensitive=case_insensitive)
    assert ours["pearson"] == pytest.approx(pearson[0], abs=1e-6)
    assert ours["spearman"] == pytest.approx(spearman[0], abs=1e-6)
    assert 100 * ours["oov_ratio"] == pytest.approx(oov_percent)


def test_rank_averages_ties_like_scipy():
    rankdata = pytest.importorskip("scipy.stats").rankdata
    rng = np.random.default_rng(3)
    for x in (rng.integers(0, 5, 50).astype(float), rng.standard_normal(30), np.ones(4), np.array([2.0])):
        np.testing.assert_array_equal(_rank(x), rankdata(x))


# ---- report and errors --------------------------------------------------------------------------

def test_report_and_json(planted, trained):
    results = {"analogy": evaluate_analogies(planted, data_file(QUESTIONS)),
               "similarity": evaluate_similarity(trained, data_file(WORDSIM))}
    assert json.loads(json.dumps(results)) == results
    text = format_report(results)
    assert "capital-common-countries" in text and "gram9-plural-verbs" in text
    total = next(line for line in text.splitlines() if line.startswith("Total accuracy"))
    a = results["analogy"]
    assert f"{a['correct']}" in total and f"{100 * a['accuracy']:.1f}%" in total
    assert f"spearman {results['similarity']['spearman']:.4f}" in text
    assert format_report(results["analogy"]) in text


def test_errors(tmp_path, planted):
    missing = str(tmp_path / "questions.txt")
    with pytest.raises(FileNotFoundError, match=re.escape(f"{missing}: no such analogy questions file")):
        evaluate_analogies(planted, missing)
    with pytest.raises(FileNotFoundError, match=re.escape(f"{missing}: no such word-pairs file")):
        evaluate_similarity(planted, missing)
    (tmp_path / "nohead.txt").write_text("a b c d\n")
    with pytest.raises(ValueError, match=r"nohead.txt: line 1 comes before the first ': section' header"):
        evaluate_analogies(planted, str(tmp_path / "nohead.txt"))
    (tmp_path / "oov.tsv").write_text("# w1\tw2\tscore\nqqq\trrr\t1.0\n")
    with pytest.raises(ValueError, match=r"oov.tsv: no usable word pairs \(1 out of vocabulary\)"):
        evaluate_similarity(planted, str(tmp_path / "oov.tsv"))
