"""Every exported word carries its own vector: the files `w2v-dist export` writes and the
neighbours `w2v-dist similar` prints are checked against the run's own files, ``vectors.npy`` and
``vocab/`` read with numpy alone (``conftest.run_vocab``), never through :class:`Vectors`.

A label swap passes every test that compares an export with a load of the same run (both go
through the same reader), and shapes and finite values say nothing about which word a row is.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import cli, run_vocab


def parse_binary(data: bytes) -> tuple[list[str], np.ndarray]:
    """word2vec.c's binary format, read here byte by byte: "n d\\n", then per word
    ``word`` SPACE ``d`` little-endian float32 NEWLINE."""
    header, _, body = data.partition(b"\n")
    n, d = (int(x) for x in header.split())
    words, vectors, pos = [], np.empty((n, d), np.float32), 0
    for i in range(n):
        space = body.index(b" ", pos)
        words.append(body[pos:space].decode("utf-8"))
        vectors[i] = np.frombuffer(body, "<f4", d, space + 1)
        pos = space + 1 + 4 * d
        assert body[pos:pos + 1] == b"\n", f"record {i} does not end in a newline"
        pos += 1
    assert pos == len(body), "bytes after the last record"
    return words, vectors


def parse_text(data: bytes) -> tuple[list[str], np.ndarray]:
    """word2vec.c's text format: "n d", then "word f1 ... fd" per line."""
    lines = data.decode("utf-8").splitlines()
    n, d = (int(x) for x in lines[0].split())
    assert len(lines) == n + 1
    fields = [line.split(" ") for line in lines[1:]]
    assert all(len(f) == d + 1 for f in fields)
    return [f[0] for f in fields], np.array([f[1:] for f in fields], np.float64).astype(np.float32)


@pytest.mark.parametrize("fmt", ["word2vec-binary", "word2vec", "npy"])
def test_export_writes_each_word_with_its_own_vector(plain_run, tmp_path, fmt):
    """Guards: two word labels swapped when a run directory is loaded for export (every user's
    vectors attached to the wrong words; the export tests compared export with load); for the text
    format also floats written with 6 decimals (the CLI test's tolerance let them through).

    The exported words are the vocabulary's, in its order, and row i is vectors.npy's row i, bit
    for bit (the text format writes the shortest decimal that reads back as the same float32)."""
    words, counts = run_vocab(plain_run)
    vectors = np.load(plain_run / "vectors.npy")
    out = tmp_path / ("v.npy" if fmt == "npy" else "v.out")
    cli("export", str(plain_run), "--format", fmt, "--output", str(out))
    if fmt == "npy":
        got_vectors = np.load(out)
        sidecar = [line.split(" ") for line in (tmp_path / "v.vocab.txt").read_text(encoding="utf-8").splitlines()]
        got_words = [w for w, _ in sidecar]
        assert [int(c) for _, c in sidecar] == counts.tolist()
    else:
        got_words, got_vectors = (parse_binary if fmt == "word2vec-binary" else parse_text)(out.read_bytes())
    assert got_words == words
    assert got_vectors.dtype == np.float32 and np.array_equal(got_vectors, vectors)


def test_similar_on_a_run_is_cosine_on_its_files(plain_run):
    """Guards: two word labels swapped when a run directory is loaded (`similar` and `eval` on a
    run answered for the wrong words).

    `w2v-dist similar RUN WORD` prints the words nearest WORD by cosine, each with its score; both
    are recomputed here from vectors.npy and the vocabulary files."""
    words, _ = run_vocab(plain_run)
    vectors = np.load(plain_run / "vectors.npy").astype(np.float64)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    top = 8
    for query in (words[0], words[1], words[len(words) // 2]):
        i = words.index(query)
        sims = unit @ unit[i]
        sims[i] = -np.inf
        lines = cli("similar", str(plain_run), query, "--top", str(top)).stdout.splitlines()
        printed = [(w, float(s)) for w, s in (line.split("\t") for line in lines)]
        assert len(printed) == top
        for w, s in printed:  # each word printed with its own cosine
            assert s == pytest.approx(sims[words.index(w)], abs=1e-4), (query, w)
        # and they are the nearest ones (up to the 4 printed decimals)
        assert min(s for _, s in printed) >= np.sort(sims)[-top - 1] - 1e-4
