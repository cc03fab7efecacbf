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

from tests.conftest import DATA, cli, shared_file
from w2v_dist import evaluate as evaluate_module
from w2v_dist.config import ConfigError
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
    with pytest.raises(ValueError, match=r"oov.tsv: no usable word pairs \(1 out of vocabulary, 0 malformed\)"):
        evaluate_similarity(planted, str(tmp_path / "oov.tsv"))
    (tmp_path / "bad.tsv").write_text("qqq\trrr\t1.0\nking\tqueen\tnan\nking queen 1\n")
    with pytest.raises(ValueError, match=r"bad.tsv: no usable word pairs \(1 out of vocabulary, 2 malformed\)"):
        evaluate_similarity(planted, str(tmp_path / "bad.tsv"))


@pytest.mark.parametrize("bad", [0, -5])
def test_restrict_vocab_below_one_is_refused(tmp_path, planted, bad):
    """Guards: restrict_vocab=-5 searching all but the last 5 words (similarity) or an IndexError
    (analogies), 0 searching every word."""
    (tmp_path / "q.txt").write_text(": s\nman king woman queen\n")
    (tmp_path / "p.tsv").write_text("man\tking\t5\n")
    for evaluate, uri in ((evaluate_analogies, "q.txt"), (evaluate_similarity, "p.tsv")):
        with pytest.raises(ConfigError, match=f"--restrict-vocab must be >= 1 .*, got {bad}$"):
            evaluate(planted, str(tmp_path / uri), restrict_vocab=bad)


def test_cli_restrict_vocab_below_one_is_one_line(tmp_path):
    """Guards: `eval --restrict-vocab -5` a traceback with --analogies, words[:-5] with --similarity."""
    (tmp_path / "v.txt").write_text("3 2\nman 0.1 0.2\nking 0.3 -0.1\nwoman -0.2 0.4\n")
    (tmp_path / "q.txt").write_text(": s\nman king woman queen\n")
    (tmp_path / "p.tsv").write_text("man\tking\t5\nman\twoman\t7\nking\twoman\t2\n")
    for flag, uri in (("--analogies", "q.txt"), ("--similarity", "p.tsv")):
        p = cli("eval", str(tmp_path / "v.txt"), flag, str(tmp_path / uri), "--restrict-vocab", "-5", check=False)
        assert p.returncode == 2 and "Traceback" not in p.stderr and p.stderr.count("\n") == 1, p.stderr
        assert p.stderr.startswith("w2v-dist: error: --restrict-vocab must be >= 1"), p.stderr


# ---- malformed lines ----------------------------------------------------------------------------

def gensim_skipped_lines(caplog, uri: str) -> list[int]:
    """The 1-based numbers of the lines gensim logged as invalid, blank lines left out."""
    lines = Path(uri).read_text().split("\n")
    logged = [int(m) + 1 for m in re.findall(r"Skipping invalid line #(\d+)", caplog.text)]
    return [n for n in logged if lines[n - 1].strip()]


def test_malformed_analogy_lines_are_counted_as_gensim_skips_them(tmp_path, planted, caplog):
    """Guards: lines that are not 'a b c d' skipped without a word (gensim at least logs them):
    badq.txt said '0 of 1 questions skipped' of a file with 3 malformed lines."""
    good = Path(data_file(QUESTIONS)).read_text(encoding="utf-8").splitlines()[:60]
    lines = good[:3] + ["bad line here", "man king woman", ""] + good[3:40] + ["A B C D E"] + good[40:]
    (tmp_path / "q.txt").write_text("\n".join(lines) + "\n")
    uri = str(tmp_path / "q.txt")
    ours = evaluate_analogies(planted, uri)
    with caplog.at_level(logging.INFO, logger="gensim.models.keyedvectors"):
        expected = gensim_analogies(to_gensim(planted), uri)
    assert ours_as_gensim(ours) == expected
    skipped = gensim_skipped_lines(caplog, uri)
    assert skipped == [4, 5, 44]  # the oracle saw them where they were put
    assert (ours["malformed"], ours["first_malformed_line"]) == (len(skipped), skipped[0])
    assert "3 malformed lines skipped, the first at line 4: not 4 words 'a b c d'" in format_report(ours)
    clean = evaluate_analogies(planted, data_file(QUESTIONS))
    assert (clean["malformed"], clean["first_malformed_line"]) == (0, None)
    assert "malformed" not in format_report(clean)


def test_nan_scores_are_skipped_as_malformed_lines(tmp_path, trained, caplog):
    """Guards: a `nan` human score turning Pearson into NaN (and `--json` into invalid JSON) while
    Spearman ranked the NaN somewhere. gensim keeps such a line and returns NaN for both
    correlations; here it is skipped and counted, as gensim skips a score it cannot parse: the
    numbers are gensim's on the file without it."""
    pairs = Path(data_file(WORDSIM)).read_text(encoding="utf-8").split("\n")
    w = trained.words[20:24]  # in the vocabulary: gensim would skip an OOV pair before reading its score
    bad = [f"{w[0]}\t{w[1]}\tnan", f"{w[2]}\t{w[3]}\t-inf", "one\tfield", "a\tb\tnot-a-number"]
    dirty = pairs[:5] + bad + pairs[5:]
    (tmp_path / "dirty.tsv").write_text("\n".join(dirty))
    (tmp_path / "clean.tsv").write_text("\n".join(pairs))
    kv = to_gensim(trained)
    with caplog.at_level(logging.INFO, logger="gensim.models.keyedvectors"):
        pearson, spearman, _ = kv.evaluate_word_pairs(str(tmp_path / "dirty.tsv"))
    assert np.isnan(pearson[0]) and np.isnan(spearman[0])  # gensim: one NaN spoils the whole file
    assert gensim_skipped_lines(caplog, str(tmp_path / "dirty.tsv")) == [8, 9]
    ours = evaluate_similarity(trained, str(tmp_path / "dirty.tsv"))
    pearson, spearman, oov_percent = kv.evaluate_word_pairs(str(tmp_path / "clean.tsv"))
    assert ours["pearson"] == pytest.approx(pearson[0], abs=1e-6)
    assert ours["spearman"] == pytest.approx(spearman[0], abs=1e-6)
    assert 100 * ours["oov_ratio"] == pytest.approx(oov_percent)
    assert (ours["malformed"], ours["first_malformed_line"]) == (4, 6)
    assert "4 malformed lines skipped, the first at line 6" in format_report(ours)


def test_huge_scores_do_not_overflow_to_nan(tmp_path, trained):
    """Guards: scores near 1e308, finite each, whose sums overflow: Pearson NaN (gensim's too: scipy
    gives NaN). A correlation does not change with the scale of the scores: gensim's on WordSim."""
    lines = [line.split("\t") for line in Path(data_file(WORDSIM)).read_text().splitlines() if not line.startswith("#")]
    (tmp_path / "huge.tsv").write_text("".join(f"{a}\t{b}\t{float(s) * 1e307!r}\n" for a, b, s in lines))
    ours = evaluate_similarity(trained, str(tmp_path / "huge.tsv"))
    pearson, spearman, _ = to_gensim(trained).evaluate_word_pairs(data_file(WORDSIM))
    assert ours["pearson"] == pytest.approx(pearson[0], abs=1e-6)
    assert ours["spearman"] == pytest.approx(spearman[0], abs=1e-6)


def strict_json(text: str):
    def refuse(constant):
        raise AssertionError(f"{constant} is not JSON")
    return json.loads(text, parse_constant=refuse)


def test_cli_eval_json_is_valid_and_names_the_skipped_lines(tmp_path):
    """Guards: `eval --json` printing NaN (not JSON) for a `nan` score, or for a correlation that is
    undefined; malformed analogy lines never mentioned in the report or the JSON."""
    (tmp_path / "v.txt").write_text("4 2\nman 0.1 0.2\nking 0.3 -0.1\nwoman -0.2 0.4\nqueen 0.5 0.5\n")
    (tmp_path / "nan.tsv").write_text("man\tking\t6.77\nwoman\tqueen\t7.35\nking\tqueen\tnan\nman\tqueen\t1\n")
    (tmp_path / "flat.tsv").write_text("man\tking\t5\nwoman\tqueen\t5\n")  # one score: no correlation
    (tmp_path / "badq.txt").write_text(": sec\nman king woman queen\nbad line here\nman king woman\n\nA B C D E\n")
    args = ["eval", str(tmp_path / "v.txt"), "--analogies", str(tmp_path / "badq.txt"),
            "--similarity", str(tmp_path / "nan.tsv"), "--similarity", str(tmp_path / "flat.tsv")]
    results = strict_json(cli(*args, "--json").stdout)
    analogy = results["analogies"][str(tmp_path / "badq.txt")]
    assert (analogy["questions"], analogy["malformed"], analogy["first_malformed_line"]) == (1, 3, 3)
    nan, flat = (results["similarity"][str(tmp_path / f)] for f in ("nan.tsv", "flat.tsv"))
    assert (nan["pairs"], nan["malformed"], nan["first_malformed_line"]) == (3, 1, 3)
    assert isinstance(nan["pearson"], float) and isinstance(nan["spearman"], float)
    assert flat["pearson"] is None and flat["spearman"] is None
    report = cli(*args).stdout
    assert "3 malformed lines skipped, the first at line 3: not 4 words 'a b c d'" in report
    assert "1 malformed line skipped, the first at line 3" in report
    assert "flat.tsv: spearman n/a  pearson n/a" in report


def test_vectors_holding_nan_give_no_correlation_and_valid_json(tmp_path):
    """Guards: a NaN vector ranked as the largest cosine (a made-up spearman; pearson NaN), and
    `eval --json` then failing with a ValueError traceback (NaN is not JSON). gensim returns NaN
    for both; here they are n/a, with the pairs counted, and said at load and in the eval."""
    (tmp_path / "v.txt").write_text("4 2\na nan 1\nb 1 0\nc 0 1\nd 1 1\n")
    (tmp_path / "p.tsv").write_text("a\tb\t1\nb\tc\t2\na\tc\t3\nb\td\t4\n")
    p = cli("eval", str(tmp_path / "v.txt"), "--similarity", str(tmp_path / "p.tsv"), "--json")
    got = strict_json(p.stdout)["similarity"][str(tmp_path / "p.tsv")]
    assert (got["pearson"], got["spearman"], got["nonfinite"], got["pairs"]) == (None, None, 2, 4)
    assert "1 of 4 vectors hold NaN or inf (the word 'a' first)" in p.stderr, p.stderr
    assert "2 of 4 pairs have no finite cosine" in p.stderr, p.stderr
    assert "p.tsv: spearman n/a  pearson n/a" in cli("eval", str(tmp_path / "v.txt"), "--similarity",
                                                     str(tmp_path / "p.tsv")).stdout


def test_a_damaged_compressed_benchmark_file_is_one_line(tmp_path):
    """Guards: gzip's EOFError (a cut download) as a traceback."""
    (tmp_path / "v.txt").write_text("2 2\nman 0.1 0.2\nking 0.3 -0.1\n")
    (tmp_path / "p.tsv.gz").write_bytes(gzip.compress(b"man\tking\t1\n" * 50)[:20])
    p = cli("eval", str(tmp_path / "v.txt"), "--similarity", str(tmp_path / "p.tsv.gz"), check=False)
    assert p.returncode == 2 and p.stderr.strip().splitlines() == [
        f"w2v-dist: error: {tmp_path / 'p.tsv.gz'}: not readable as gzip (Compressed file ended before the "
        "end-of-stream marker was reached): the file is damaged or cut short, or its suffix does not say how it is "
        "compressed"], p.stderr
