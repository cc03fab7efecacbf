"""export.py: word2vec text/binary and .npy files that gensim and word2vec.c tools read."""

from __future__ import annotations

import bz2
import doctest
import importlib
import lzma
import os
import sys

import numpy as np
import pytest

from tests.conftest import cli
from w2v_dist import export, storage
from w2v_dist.config import ConfigError
from w2v_dist.export import save_npy, save_word2vec
from w2v_dist.vectors import Vectors

WORDS = ["the", "naïve", "東京", "</s>", "x"]


def vectors(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((len(WORDS), 7)).astype(np.float32)
    # values that "%f" (word2vec.c) would mangle: tiny, huge, negative zero, subnormal
    v[0, :4] = [1e-12, -3.4e38, -0.0, 1e-45]
    return v


def test_doctests():
    assert doctest.testmod(export).failed == 0


def test_text_loads_in_gensim(tmp_path):
    KeyedVectors = pytest.importorskip("gensim.models").KeyedVectors
    uri = str(tmp_path / "v.txt")
    save_word2vec(uri, WORDS, vectors(), binary=False)
    kv = KeyedVectors.load_word2vec_format(uri, binary=False)
    assert kv.index_to_key == WORDS
    np.testing.assert_allclose(kv.vectors, vectors(), rtol=0, atol=0)  # shortest float32 repr: exact


def test_binary_loads_in_gensim(tmp_path):
    KeyedVectors = pytest.importorskip("gensim.models").KeyedVectors
    uri = str(tmp_path / "v.bin")
    save_word2vec(uri, WORDS, vectors(), binary=True)
    kv = KeyedVectors.load_word2vec_format(uri, binary=True)
    assert kv.index_to_key == WORDS
    assert np.array_equal(kv.vectors, vectors(), equal_nan=True)


def test_text_layout(tmp_path):
    uri = str(tmp_path / "v.txt")
    save_word2vec(uri, WORDS, vectors(), binary=False)
    lines = storage.read_bytes(uri).decode("utf-8").split("\n")
    assert lines[0] == f"{len(WORDS)} 7" and lines[-1] == ""
    for word, line in zip(WORDS, lines[1:]):
        fields = line.split(" ")  # no trailing space: exactly word + 7 numbers
        assert fields[0] == word and len(fields) == 8
    assert lines[1].split(" ")[1:5] == ["1e-12", "-3.4e+38", "-0", "1e-45"]


def test_binary_layout(tmp_path):
    uri = str(tmp_path / "v.bin")
    v = np.array([[1.0, -2.0], [0.5, 3.0]], np.float32)
    save_word2vec(uri, ["a", "bé"], v, binary=True)
    expected = (b"2 2\n" + b"a " + v[0].astype("<f4").tobytes() + b"\n"
                + "bé".encode() + b" " + v[1].astype("<f4").tobytes() + b"\n")
    assert storage.read_bytes(uri) == expected


def test_npy_and_vocab_sidecar(tmp_path):
    uri = str(tmp_path / "vectors.npy")
    save_npy(uri, WORDS, vectors().astype(np.float64), counts=[50, 40, 30, 20, 10])
    loaded = np.load(uri)
    assert loaded.dtype == np.float32 and np.array_equal(loaded, vectors())
    vocab = (tmp_path / "vectors.vocab.txt").read_text(encoding="utf-8")
    assert vocab == "the 50\nnaïve 40\n東京 30\n</s> 20\nx 10\n"
    save_npy(uri, WORDS, vectors())  # without counts: 0, as word2vec.c's -save-vocab format needs a number
    assert (tmp_path / "vectors.vocab.txt").read_text(encoding="utf-8").splitlines()[0] == "the 0"


def test_memory_uri_roundtrip():
    save_word2vec("memory://export-test/v.bin", WORDS, vectors(), binary=True)
    assert storage.read_bytes("memory://export-test/v.bin").startswith(b"5 7\nthe ")


@pytest.mark.parametrize("bad", ["new york", "tab\there", "line\nbreak", ""])
@pytest.mark.parametrize("fmt", ["text", "binary", "npy"])
def test_word_with_whitespace_is_refused(tmp_path, bad, fmt):
    words = ["ok", bad, "fine"]
    uri = str(tmp_path / ("v.npy" if fmt == "npy" else "v.out"))
    with pytest.raises(ValueError, match="word #1") as e:
        if fmt == "npy":
            save_npy(uri, words, np.zeros((3, 2)))
        else:
            save_word2vec(uri, words, np.zeros((3, 2)), binary=fmt == "binary")
    assert repr(bad) in str(e.value) and uri in str(e.value)
    assert os.listdir(tmp_path) == []  # nothing half-written


def test_shape_errors(tmp_path):
    with pytest.raises(ValueError, match="2 words but 3 vector rows"):
        save_word2vec(str(tmp_path / "v.txt"), ["a", "b"], np.zeros((3, 2)), binary=False)
    with pytest.raises(ValueError, match="2-D"):
        save_word2vec(str(tmp_path / "v.txt"), ["a", "b"], np.zeros(2), binary=False)
    with pytest.raises(ValueError, match="ending in .npy"):
        save_npy(str(tmp_path / "v.bin"), ["a"], np.zeros((1, 2)))
    with pytest.raises(ValueError, match="one count per word"):
        save_npy(str(tmp_path / "v.npy"), ["a"], np.zeros((1, 2)), counts=[1, 2])


def test_many_words_text_roundtrip(tmp_path):
    """Several write blocks (8192 rows each) stay in order and exact."""
    rng = np.random.default_rng(1)
    v = rng.standard_normal((20_000, 3)).astype(np.float32)
    words = [f"w{i}" for i in range(len(v))]
    uri = str(tmp_path / "big.txt")
    save_word2vec(uri, words, v, binary=False)
    lines = storage.read_bytes(uri).decode().splitlines()
    assert len(lines) == 20_001 and lines[-1].startswith("w19999 ")
    parsed = np.array([[float(x) for x in line.split(" ")[1:]] for line in lines[1:]], np.float32)
    assert np.array_equal(parsed, v)


def test_gz_name_compresses(tmp_path):
    KeyedVectors = pytest.importorskip("gensim.models").KeyedVectors
    uri = str(tmp_path / "v.txt.gz")
    save_word2vec(uri, WORDS, vectors(), binary=False)
    assert storage.read_bytes(uri)[:2] == b"\x1f\x8b"  # gzip magic
    assert np.array_equal(KeyedVectors.load_word2vec_format(uri).vectors, vectors())


def _smart_open_reads_zst() -> bool:
    """gensim opens files with smart_open, which reads .zst with Python 3.14's compression.zstd or
    backports.zstd, not with the zstandard that fsspec (and so w2v-dist) uses."""
    try:
        return sys.version_info >= (3, 14) or importlib.import_module("backports.zstd") is not None
    except ImportError:
        return False


@pytest.mark.parametrize("binary", [False, True])
@pytest.mark.parametrize("suffix,magic", [(".zst", b"\x28\xb5\x2f\xfd"), (".xz", b"\xfd7zXZ"), (".bz2", b"BZh")])
def test_every_compressed_name_loads_back(tmp_path, suffix, magic, binary):
    """Guards: a .zst export crashing with "ValueError: flush of closed file" and writing nothing
    (zstandard's writer closed the file that atomic_open had still to sync and rename)."""
    name = ("v.bin" if binary else "v.txt") + suffix
    uri = str(tmp_path / name)
    save_word2vec(uri, WORDS, vectors(), binary=binary)
    assert os.listdir(tmp_path) == [name]  # no temporary file left beside it
    data = storage.read_bytes(uri)
    assert data.startswith(magic)
    # decompressed by another library: the very bytes of the uncompressed export (which gensim reads)
    decompress = {".zst": lambda b: pytest.importorskip("zstandard").ZstdDecompressor().decompressobj().decompress(b),
                  ".xz": lzma.decompress, ".bz2": bz2.decompress}[suffix]
    save_word2vec(str(tmp_path / "plain"), WORDS, vectors(), binary=binary)
    assert decompress(data) == (tmp_path / "plain").read_bytes()
    if suffix != ".zst" or _smart_open_reads_zst():
        KeyedVectors = pytest.importorskip("gensim.models").KeyedVectors
        kv = KeyedVectors.load_word2vec_format(uri, binary=binary)
        assert kv.index_to_key == WORDS and np.array_equal(kv.vectors, vectors())
    back = Vectors.load(uri)
    assert back.words == WORDS and np.array_equal(back.vectors, vectors())


def test_zst_without_a_zstd_package_is_refused(tmp_path, monkeypatch):
    """fsspec infers .zst only with a zstd package installed: without one the file would be
    written uncompressed under a name that says zstd."""
    monkeypatch.setattr(export.fsspec.utils, "infer_compression", lambda uri: None)
    with pytest.raises(ConfigError, match=r"v.txt.zst: writing .zst needs the zstandard package"):
        save_word2vec(str(tmp_path / "v.txt.zst"), WORDS, vectors(), binary=False)
    assert os.listdir(tmp_path) == []


def test_cli_exports_zst_and_npy_of_words_holding_unicode_spaces(tmp_path):
    """Guards, at the command line where they were met: `export --output x.txt.zst` (and .bin.zst)
    a traceback and no file; `similar v.npy` refusing the .vocab.txt of words that hold NBSP,
    U+2028, U+0085 or U+3000 that `export --format npy` had just written."""
    words = ["cat", "10\xa0km", "dog\u2028x", "\x85mat", "on\u3000"]
    v = np.random.default_rng(5).standard_normal((len(words), 4)).astype(np.float32)
    src = str(tmp_path / "src.txt")
    save_word2vec(src, words, v, binary=False)
    for fmt, name in [("word2vec", "x.txt.zst"), ("word2vec-binary", "x.bin.zst"), ("npy", "v.npy")]:
        cli("export", src, "--format", fmt, "--output", str(tmp_path / name))
        back = Vectors.load(str(tmp_path / name))
        assert back.words == words and np.array_equal(back.vectors, v), name
    p = cli("similar", str(tmp_path / "v.npy"), "cat", "--top", "4")
    assert sorted(line.split("\t")[0] for line in p.stdout.rstrip("\n").split("\n")) == sorted(words[1:])


def test_cli_npy_export_to_another_suffix_is_one_line(tmp_path):
    """Guards: `export --format npy --output r.vec` ending in a ValueError traceback."""
    src = str(tmp_path / "src.txt")
    save_word2vec(src, ["a", "b"], np.eye(2), binary=False)
    p = cli("export", src, "--format", "npy", "--output", str(tmp_path / "r.vec"), check=False)
    assert p.returncode == 2 and "Traceback" not in p.stderr and p.stderr.count("\n") == 1, p.stderr
    assert p.stderr.startswith(f"w2v-dist: error: {tmp_path / 'r.vec'}: an .npy export needs an --output ending "
                               "in .npy"), p.stderr
    assert os.listdir(tmp_path) == ["src.txt"]


def test_projector_files_round_trip_a_run(plain_run, tmp_path):
    """Guards: rows out of step with the words (a header row counted, an off-by-one in the blocks),
    floats that do not read back as the trained float32, or a config TensorBoard cannot parse."""
    from w2v_dist.cli import run
    from tests.conftest import run_vocab

    out = tmp_path / "proj"
    assert run(["export", str(plain_run), "--format", "projector", "--output", str(out), "--max-words", "50"]) == 0
    vectors = np.load(plain_run / "vectors.npy")
    words, counts = run_vocab(plain_run)
    tsv = np.loadtxt(out / "vectors.tsv", delimiter="\t", dtype=np.float64)
    assert tsv.shape == (50, vectors.shape[1]) and np.array_equal(tsv.astype(np.float32), vectors[:50])
    lines = (out / "metadata.tsv").read_text(encoding="utf-8").splitlines()
    assert lines[0] == "word\tcount"
    assert [line.split("\t") for line in lines[1:]] == [[w, str(c)] for w, c in zip(words[:50], counts[:50])]
    text_format = pytest.importorskip("google.protobuf.text_format")
    projector = pytest.importorskip("tensorboard.plugins.projector.projector_config_pb2")
    config = text_format.Parse((out / "projector_config.pbtxt").read_text(), projector.ProjectorConfig())
    (emb,) = config.embeddings
    assert (emb.tensor_path, emb.metadata_path, list(emb.tensor_shape)) == ("vectors.tsv", "metadata.tsv", [50, 16])


def test_projector_keeps_the_most_frequent_ten_thousand_by_default(tmp_path):
    from w2v_dist.vectors import Vectors

    n = export.PROJECTOR_MAX_WORDS + 5
    words = [f"w{i}" for i in range(n)]
    Vectors(words, np.ones((n, 2), np.float32), np.arange(n, 0, -1)).save(str(tmp_path), "projector")
    assert len((tmp_path / "vectors.tsv").read_text().splitlines()) == export.PROJECTOR_MAX_WORDS
    meta = (tmp_path / "metadata.tsv").read_text().splitlines()
    assert len(meta) == export.PROJECTOR_MAX_WORDS + 1 and meta[-1] == f"w9999\t{n - 9999}"
