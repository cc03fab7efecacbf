"""vectors.py: loading every format (ours, gensim's, word2vec.c's) and gensim-identical queries."""

from __future__ import annotations

import doctest
import gzip
import itertools
import re

import numpy as np
import pytest

from tests.conftest import DATA, shared_file
from w2v_dist import storage, vectors as vectors_module
from w2v_dist.vectors import Vectors, VectorsFormatError



def train_gensim(lines: int = 20_000):
    """A small real model: gensim, 1 epoch over the first ``lines`` GCIDE sentences (~0.5 s)."""
    gensim_models = pytest.importorskip("gensim.models")
    path = DATA / "gcide_en.txt.gz"
    shared_file(path)
    with gzip.open(path, "rt", encoding="utf-8") as f:
        sentences = [[w for w in re.split(r"\W+", line.lower()) if w] for line in itertools.islice(f, lines)]
    return gensim_models.Word2Vec(sentences, vector_size=32, min_count=5, epochs=1, workers=1, seed=1).wv


@pytest.fixture(scope="module")
def kv():
    return train_gensim()


@pytest.fixture(scope="module")
def ours(kv):
    return Vectors(kv.index_to_key, kv.vectors, np.array([kv.get_vecattr(w, "count") for w in kv.index_to_key]))


def small() -> Vectors:
    rng = np.random.default_rng(0)
    words = ["the", "of", "naïve", "東京", "</s>", "x"]
    return Vectors(words, rng.standard_normal((len(words), 5)).astype(np.float32), np.arange(60, 0, -10))


def test_doctests():
    assert doctest.testmod(vectors_module).failed == 0


# ---- files --------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,fmt", [("v.txt", "word2vec"), ("v.vec", "word2vec"), ("v.bin", "word2vec-binary"),
                                      ("v.npy", "npy"), ("v.txt.gz", "word2vec"), ("v.bin.gz", "word2vec-binary"),
                                      ("v.txt.zst", "word2vec"), ("v.bin.zst", "word2vec-binary"),
                                      ("v.txt.xz", "word2vec"), ("v.bin.bz2", "word2vec-binary")])
def test_roundtrip(tmp_path, name, fmt):
    v = small()
    uri = str(tmp_path / name)
    v.save(uri, fmt)
    back = Vectors.load(uri)
    assert back.words == v.words
    assert back.vectors.dtype == np.float32 and np.array_equal(back.vectors, v.vectors)
    if fmt == "npy":
        assert back.counts.tolist() == v.counts.tolist()


# Where str.splitlines() or str.split() cut a line that word2vec.c's reader does not: a word may
# hold these (export.check_words refuses only " \t\n\r\v\f"). Computed, so that none is left out.
UNICODE_BREAKS = [c for c in map(chr, range(0x110000))
                  if (c.isspace() or len(f"a{c}b".splitlines()) > 1) and c not in " \t\n\r\v\f"]


@pytest.mark.parametrize("name,fmt", [("v.npy", "npy"), ("v.txt", "word2vec"), ("v.bin", "word2vec-binary")])
def test_words_holding_unicode_spaces_and_line_breaks_round_trip(tmp_path, name, fmt):
    """Guards: the .npy's .vocab.txt read back with splitlines()/split(), which cut a word at NBSP,
    U+2028, U+0085, U+3000...: `similar v.npy` refused the file its own export had written
    ("line 6 is '10\\xa0km 572', expected 'word count'"), or read other words."""
    assert {"\xa0", "\u2028", "\x85", "\u3000", "\x1c", "\u2029"} <= set(UNICODE_BREAKS)
    words = [w for c in UNICODE_BREAKS for w in (c, f"10{c}km", f"{c}lead", f"trail{c}")]
    rng = np.random.default_rng(4)
    v = Vectors(words, rng.standard_normal((len(words), 3)).astype(np.float32), np.arange(len(words), 0, -1) * 7)
    uri = str(tmp_path / name)
    v.save(uri, fmt)
    back = Vectors.load(uri)
    assert back.words == words and np.array_equal(back.vectors, v.vectors)
    if fmt == "npy":
        assert back.counts.tolist() == v.counts.tolist()


def test_npy_sidecar_errors_name_the_line(tmp_path):
    small().save(str(tmp_path / "v.npy"))
    sidecar = tmp_path / "v.vocab.txt"
    good = sidecar.read_text(encoding="utf-8")
    for bad, line in [("the 60\nof sixty\n", "of sixty"), ("the 60\n 50\n", " 50"), ("the 60\nof\n", "of"),
                      ("the 60\nof 5\xa0\n", "of 5\xa0")]:
        sidecar.write_text(bad + good.split("\n", 2)[2], encoding="utf-8")
        expected = f"v.vocab.txt: line 2 is {line!r}, expected 'word count'"
        with pytest.raises(VectorsFormatError, match=re.escape(expected)):
            Vectors.load(str(tmp_path / "v.npy"))
    sidecar.write_text(good.replace("\n", "\r\n"), encoding="utf-8")  # edited on Windows: still read
    assert Vectors.load(str(tmp_path / "v.npy")).words == small().words
    (tmp_path / "v.npy").rename(tmp_path / "v.arr")
    with pytest.raises(VectorsFormatError, match=r"v.arr: an .npy array, but its words are found only beside"):
        Vectors.load(str(tmp_path / "v.arr"))


@pytest.mark.parametrize("name,head", [("v.bin", b"6 5\nthe "), ("v.bin.gz", b"\x1f\x8b"), ("v.vec", b"6 5\nthe "),
                                       ("v.npy", b"\x93NUMPY")])
def test_save_picks_format_from_suffix(name, head):
    uri = f"memory://vectors-test/{name}"
    small().save(uri)
    assert storage.read_bytes(uri).startswith(head)
    back = Vectors.load(uri)
    assert back.words == small().words and np.array_equal(back.vectors, small().vectors)
    if name == "v.bin.gz":  # compressed binary, not compressed text
        small().save("memory://vectors-test/ref.bin", "word2vec-binary")
        assert gzip.decompress(storage.read_bytes(uri)) == storage.read_bytes("memory://vectors-test/ref.bin")


@pytest.mark.parametrize("saved,name", [("word2vec", "v.bin"), ("word2vec-binary", "v.txt"),
                                        ("word2vec-binary", "vectors")])
def test_format_is_told_by_content_not_name(tmp_path, saved, name):
    uri = str(tmp_path / name)
    small().save(uri, saved)
    assert np.array_equal(Vectors.load(uri).vectors, small().vectors)


@pytest.mark.parametrize("binary", [False, True])
def test_loads_gensim_files(tmp_path, kv, binary):
    """gensim writes binary without word2vec.c's newline after each vector, text via str(float32)."""
    uri = str(tmp_path / "g.bin")
    kv.save_word2vec_format(uri, binary=binary)
    back = Vectors.load(uri)
    assert back.words == kv.index_to_key
    np.testing.assert_array_equal(back.vectors, kv.vectors)


def test_loads_word2vec_c_text_with_trailing_spaces(tmp_path):
    uri = str(tmp_path / "c.txt")
    (tmp_path / "c.txt").write_bytes(b"2 3\nthe 0.001 -0.5 1.000000 \n</s> 1 2 3 \n")
    v = Vectors.load(uri)
    assert v.words == ["the", "</s>"]
    assert np.array_equal(v.vectors, np.array([[0.001, -0.5, 1], [1, 2, 3]], np.float32))


def test_duplicate_words_keep_the_first_row(tmp_path):
    (tmp_path / "d.txt").write_bytes(b"3 1\na 1\nb 2\na 3\n")
    v = Vectors.load(str(tmp_path / "d.txt"))
    assert v.words == ["a", "b"] and v["a"].tolist() == [1.0]


def test_load_errors(tmp_path):
    missing = str(tmp_path / "nope.bin")
    with pytest.raises(FileNotFoundError, match=re.escape(missing)):
        Vectors.load(missing)
    (tmp_path / "ragged.txt").write_bytes(b"2 3\na 1 2 3\nb 1 2\n")
    with pytest.raises(VectorsFormatError, match=r"ragged.txt: line 3 is not 'word' and 3 numbers"):
        Vectors.load(str(tmp_path / "ragged.txt"))
    (tmp_path / "short.txt").write_bytes(b"3 1\na 1\nb 2\n")
    with pytest.raises(VectorsFormatError, match=r"short.txt: has fewer than the 3 words"):
        Vectors.load(str(tmp_path / "short.txt"))
    (tmp_path / "junk.txt").write_bytes(b"hello world\n")
    with pytest.raises(VectorsFormatError, match=r"junk.txt: not a word2vec file"):
        Vectors.load(str(tmp_path / "junk.txt"))
    small().save(str(tmp_path / "t.bin"), "word2vec-binary")
    (tmp_path / "t.bin").write_bytes((tmp_path / "t.bin").read_bytes()[:-9])
    with pytest.raises(VectorsFormatError, match=r"t.bin: ends after 5 of 6 words"):
        Vectors.load(str(tmp_path / "t.bin"))
    small().save(str(tmp_path / "v.npy"))
    (tmp_path / "v.vocab.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"v.vocab.txt: no such vocabulary sidecar"):
        Vectors.load(str(tmp_path / "v.npy"))
    with pytest.raises(FileNotFoundError, match="not a finished run"):
        Vectors.load(str(tmp_path))
    with pytest.raises(ValueError, match="unknown format 'glove'"):
        small().save(str(tmp_path / "v.g"), "glove")


@pytest.mark.parametrize("name, data, says", [
    # text whose first record does not parse whole was read as binary: garbage words, exit 0
    ("wrongdim.txt", b"2 2\nthe 0.5 0.25 0.125\nking 1.0 2.0 3.0\n", "line 2 is not 'word' and 2 numbers"),
    ("double-space.txt", b"2 3\nthe  0.5 0.25 0.125\nking 1.0 2.0 3.0\n", "line 2 is not 'word' and 3 numbers"),
    ("tabs.txt", b"2 3\nthe\t0.5\t0.25\t0.125\nking\t1\t2\t3\n", "line 2 is not 'word' and 3 numbers"),
    # tracebacks: UnicodeDecodeError, EOFError, BadGzipFile, a 1 TiB allocation, negative or zero dims
    ("latin1.txt", b"2 3\nthe 0.5 0.25 0.125\nm\xe9n 1.0 2.0 3.0\n", "line 3 is not valid UTF-8"),
    ("cut.txt.gz", gzip.compress(b"2 3\nthe 0.5 0.25 0.125\nking 1.0 2.0 3.0\n")[:30],
     "not readable as gzip (Compressed file ended before the end-of-stream marker was reached)"),
    ("plain.txt.gz", b"2 3\nthe 0.5 0.25 0.125\n", "not readable as gzip (Not a gzipped file"),
    ("huge.bin", b"100000000000 3\nthe " + bytes(12) + b"\n", "its header announces 100000000000 words of 3 float32s, more than"),
    ("negative-dim.txt", b"2 -3\nthe 1 2 3\n", "its header announces 2 words of -3 dimensions"),
    ("zero-dim.txt", b"2 0\nthe\nking\n", "its header announces 2 words of 0 dimensions"),
    ("negative-words.txt", b"-1 3\nthe 1 2 3\n", "its header announces -1 words of 3 dimensions"),
], ids=lambda x: x if isinstance(x, str) and "." in x else "")
def test_a_damaged_vectors_file_is_said_not_misread(tmp_path, name, data, says):
    """Each was garbage read without a word, or a traceback, until 2026-11-28."""
    (tmp_path / name).write_bytes(data)
    with pytest.raises(VectorsFormatError, match=re.escape(f"{name}: {says}")):
        Vectors.load(str(tmp_path / name))


def test_binary_that_starts_like_text_is_still_binary(tmp_path):
    """The text test looks at the first record's bytes: float32s that happen to hold a newline
    early or digits are still binary (a guard for the looser test above)."""
    words = ["the", "of"]
    vectors = np.array([[np.frombuffer(b"\n123", "<f4")[0], 2.0], [3.0, 4.0]], np.float32)
    Vectors(words, vectors).save(str(tmp_path / "v.bin"), "word2vec-binary")
    got = Vectors.load(str(tmp_path / "v.bin"))
    assert got.words == words and np.array_equal(got.vectors, vectors)


def test_npy_sidecar_with_repeats_or_bad_bytes(tmp_path):
    np.save(tmp_path / "d.npy", np.eye(3, dtype=np.float32))
    (tmp_path / "d.vocab.txt").write_bytes(b"a 3\nb 2\na 1\n")
    v = Vectors.load(str(tmp_path / "d.npy"))  # a ValueError traceback before
    assert v.words == ["a", "b"] and v.counts.tolist() == [3, 2] and v["b"].tolist() == [0, 1, 0]
    (tmp_path / "d.vocab.txt").write_bytes(b"a 3\nb\xff 2\nc 1\n")
    with pytest.raises(VectorsFormatError, match=r"d.vocab.txt: line 2 is not valid UTF-8"):
        Vectors.load(str(tmp_path / "d.npy"))


# ---- the object ---------------------------------------------------------------------------------

def test_lookup():
    v = small()
    assert len(v) == 6 and v.dim == 5 and "naïve" in v and "nope" not in v
    assert v.index("東京") == 3 and np.array_equal(v["東京"], v.vectors[3])
    with pytest.raises(KeyError, match="'Nope' is not in the vocabulary"):
        v["Nope"]
    with pytest.raises(ValueError):
        v.vectors[0, 0] = 1.0  # read-only: the cached unit matrix must not go stale
    np.testing.assert_allclose(np.linalg.norm(v.unit, axis=1), 1, rtol=1e-6)
    with pytest.raises(ValueError, match="duplicate word 'a'"):
        Vectors(["a", "b", "a"], np.zeros((3, 2)))
    cased = Vectors(["the", "The", "Paris", "THE"], np.eye(4))  # rows by frequency
    assert [cased.resolve(w) for w in ("The", "tHe", "PARIS", "paris", "THE")] == ["The", "the", "Paris", "Paris", "THE"]
    with pytest.raises(KeyError, match="'London' is not in the vocabulary"):
        cased.resolve("London")


def test_zero_vector_does_not_make_nan():
    v = Vectors(["a", "b", "z"], np.array([[1, 0], [1, 1], [0, 0]], np.float32))
    assert np.isfinite(v.unit).all()
    assert [w for w, _ in v.most_similar("a")] == ["b", "z"]


def test_most_similar_matches_gensim(kv, ours):
    for word in kv.index_to_key[50:60] + ["water", "king"]:
        if word not in ours:
            continue
        expected = kv.most_similar(word, topn=10)
        got = ours.most_similar(word, topn=10)
        assert [w for w, _ in got] == [w for w, _ in expected]
        np.testing.assert_allclose([s for _, s in got], [s for _, s in expected], rtol=1e-5, atol=1e-6)
    pos, neg = kv.index_to_key[100:103], kv.index_to_key[200:201]
    expected = kv.most_similar(positive=pos, negative=neg, topn=7, restrict_vocab=1000)
    got = ours.most_similar(positive=pos, negative=neg, topn=7, restrict_vocab=1000)
    assert [w for w, _ in got] == [w for w, _ in expected]
    np.testing.assert_allclose([s for _, s in got], [s for _, s in expected], rtol=1e-5, atol=1e-6)
    vec = kv["water"]  # a raw vector as the query
    assert [w for w, _ in ours.most_similar(vec, topn=5)] == [w for w, _ in kv.most_similar(vec, topn=5)]
    assert len(ours.most_similar("water", topn=3, restrict_vocab=10**9)) == 3
    assert list(ours)[:5] == ours.words[:5] and len(list(ours)) == len(ours)  # was a KeyError for 0
    for bad in (0, -5):  # were "all words" and "all but the last 5", silently
        with pytest.raises(ValueError, match="restrict_vocab must be >= 1"):
            ours.most_similar("water", restrict_vocab=bad)


def test_analogy_and_similarity_match_gensim(kv, ours):
    a, b, c = "man", "men", "woman"
    assert ours.analogy(a, b, c, topn=3)[0][0] == kv.most_similar(positive=[b, c], negative=[a], topn=3)[0][0]
    assert [w for w, _ in ours.analogy(a, b, c, topn=3)] == \
        [w for w, _ in kv.most_similar(positive=[b, c], negative=[a], topn=3)]
    for w1, w2 in [("water", "fire"), ("man", "woman"), ("the", "of")]:
        assert ours.similarity(w1, w2) == pytest.approx(float(kv.similarity(w1, w2)), abs=1e-6)


def test_counts_survive_npy(tmp_path, ours):
    uri = storage.join(str(tmp_path), "model.npy")
    ours.save(uri)
    back = Vectors.load(uri)
    assert back.counts.tolist() == ours.counts.tolist() and back.words == ours.words
