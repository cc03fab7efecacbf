"""Trained vectors out to the files other tools read: word2vec.c text and binary, ``.npy``, and the
TensorBoard Embedding Projector's TSV files.

word2vec formats (what ``word2vec.c`` writes and gensim's ``KeyedVectors.load_word2vec_format``
reads): a header line ``"<vocab size> <dim>\\n"``, then one record per word:

- text:   ``word v1 v2 ... vd\\n``, floats as the shortest decimal that reads back as the same
  float32 (word2vec.c's ``%lf`` keeps 6 decimals and loses small values; gensim writes ``repr``).
  No trailing space before the newline (word2vec.c writes one; readers that ``split(" ")`` would
  then see an empty last field).
- binary: ``word`` UTF-8, a space, ``dim`` little-endian float32, ``\\n``.

``.npy``: a float32 ``V x d`` array plus a sidecar ``<name>.vocab.txt`` in word2vec.c's
``-save-vocab`` format (``word count`` per line), row ``i`` of the array being line ``i``.

Projector (a directory, :func:`save_projector`): ``vectors.tsv`` (a row of tab-separated floats
per word, no header), ``metadata.tsv`` (a ``word\tcount`` header, then a row per word, in the same
order) and ``projector_config.pbtxt`` naming both, so that ``tensorboard --logdir DIR`` shows them
in its Projector tab; the two TSV files also load as they are in the standalone projector. Only the
most frequent words (10,000 by default): the projector runs in the browser.

Every file is written atomically (``storage.atomic_open``): a reader never sees half a file.
A word2vec file named ``*.gz`` (``.bz2``, ``.xz``, ``.zst``) is compressed, as gensim does.

Example:

>>> import numpy as np
>>> from w2v_dist.export import save_word2vec, save_npy
>>> vecs = np.array([[0.5, -1.0], [0.25, 2.0]], dtype=np.float32)
>>> save_word2vec("memory://doc/vectors.txt", ["king", "queen"], vecs, binary=False)
>>> from w2v_dist import storage
>>> print(storage.read_bytes("memory://doc/vectors.txt").decode(), end="")
2 2
king 0.5 -1
queen 0.25 2
>>> save_npy("memory://doc/vectors.npy", ["king", "queen"], vecs, counts=[10, 7])
>>> print(storage.read_bytes("memory://doc/vectors.vocab.txt").decode(), end="")
king 10
queen 7
"""

from __future__ import annotations

import contextlib
import re
from typing import IO, Iterator, Sequence

import fsspec.compression
import fsspec.utils
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from w2v_dist import storage
from w2v_dist.config import ConfigError

# word2vec.c splits words on these bytes (its ReadWord); a word holding one would shift every
# field after it. Other Unicode spaces (NBSP, ...) are ordinary bytes to every reader.
_SEPARATORS = re.compile(r"[ \t\n\r\v\f]")

# Rows formatted per block: bounds the memory of the text export (a 1M x 300 file is ~3 GB of
# text) and keeps each Arrow string array under its 2 GB offset limit.
_BLOCK_ROWS = 8192


def check_words(words: Sequence[str], vectors: np.ndarray, uri: str) -> np.ndarray:
    """Validate ``words`` against ``vectors``; return the vectors as a 2-D float32 array."""
    vectors = np.asarray(vectors)
    if vectors.ndim != 2:
        raise ValueError(f"{uri}: vectors must be a 2-D array (words x dim), got shape {vectors.shape}")
    if vectors.shape[1] == 0:
        raise ValueError(f"{uri}: vectors have 0 dimensions; pass the trained (words x dim) matrix")
    if len(words) != vectors.shape[0]:
        raise ValueError(f"{uri}: {len(words)} words but {vectors.shape[0]} vector rows; pass one word per row")
    for i, w in enumerate(words):
        if not w or _SEPARATORS.search(w):
            raise ValueError(
                f"{uri}: word #{i} {w!r} is empty or contains whitespace, which would corrupt a word2vec "
                f"file; fix the tokenizer or replace it (e.g. w.replace(' ', '_'))")
    return np.ascontiguousarray(vectors, dtype=np.float32)


def save_word2vec(uri: str, words: Sequence[str], vectors: np.ndarray, binary: bool,
                  storage_options: dict | None = None) -> None:
    """Write ``words``/``vectors`` in word2vec.c's text (``binary=False``) or binary format."""
    vectors = check_words(words, vectors, uri)
    n, d = vectors.shape
    with _open_compressed(uri, storage_options) as f:
        f.write(f"{n} {d}\n".encode())
        for start in range(0, n, _BLOCK_ROWS):
            block_words = words[start:start + _BLOCK_ROWS]
            block = vectors[start:start + _BLOCK_ROWS]
            f.write(_binary_block(block_words, block) if binary else _text_block(block_words, block))


@contextlib.contextmanager
def _open_compressed(uri: str, storage_options: dict | None) -> Iterator[IO[bytes]]:
    """``atomic_open``, compressing when the name says so (``.gz``, ``.bz2``, ``.xz``, ``.zst``),
    the mirror of the ``compression="infer"`` that :meth:`Vectors.load` reads with."""
    compression = fsspec.utils.infer_compression(uri)
    if compression is None and uri.endswith(".zst"):  # fsspec knows .zst only with a zstd package
        raise ConfigError(f"{uri}: writing .zst needs the zstandard package (pip install zstandard); "
                          "or use .gz, .bz2 or .xz")
    with storage.atomic_open(uri, "wb", storage_options) as raw:
        if compression is None:
            yield raw
            return
        with fsspec.compression.compr[compression](_KeepOpen(raw), mode="wb") as f:
            yield f


class _KeepOpen:
    """A file whose ``close`` leaves it open. fsspec's ``.zst`` writer (zstandard's
    ``stream_writer``, ``closefd=True``) closes the file it writes into, and ``atomic_open`` must
    still flush, fsync and rename it: "ValueError: flush of closed file", and no file."""

    def __init__(self, raw: IO[bytes]):
        self._raw = raw

    def __getattr__(self, name: str):
        return getattr(self._raw, name)

    def close(self) -> None:
        self._raw.flush()


def _binary_block(words: Sequence[str], block: np.ndarray) -> bytes:
    raw = memoryview(block.astype("<f4", copy=False).tobytes())
    step = block.shape[1] * 4
    return b"".join(w.encode("utf-8") + b" " + raw[i * step:(i + 1) * step] + b"\n" for i, w in enumerate(words))


def _float_rows(block: np.ndarray, sep: str) -> pa.Array:
    # Arrow's float32 -> string cast prints the shortest decimal that round-trips float32, in C++:
    # ~10x faster than "%.9g" % row per word, and shorter.
    n, d = block.shape
    floats = pc.cast(pa.array(block.reshape(-1)), pa.string())
    return pc.binary_join(pa.ListArray.from_arrays(pa.array(np.arange(0, n * d + 1, d, dtype=np.int32)), floats), sep)


def _text_block(words: Sequence[str], block: np.ndarray) -> bytes:
    lines = pc.binary_join_element_wise(pa.array(list(words), pa.string()), _float_rows(block, " "), " ")
    return ("\n".join(lines.to_pylist()) + "\n").encode("utf-8")


def vocab_sidecar_uri(npy_uri: str) -> str:
    """``vectors.npy`` -> ``vectors.vocab.txt``: where :func:`save_npy` puts the words."""
    if not npy_uri.endswith(".npy"):
        raise ConfigError(f"{npy_uri}: an .npy export needs an --output ending in .npy (e.g. vectors.npy), "
                          "its words going to <name>.vocab.txt beside it")
    return npy_uri[: -len(".npy")] + ".vocab.txt"


def save_npy(uri: str, words: Sequence[str], vectors: np.ndarray, counts: Sequence[int] | np.ndarray | None = None,
             storage_options: dict | None = None) -> None:
    """Write ``uri`` (float32 ``V x d`` ``.npy``) and its ``.vocab.txt`` sidecar (``word count`` lines)."""
    vocab_uri = vocab_sidecar_uri(uri)
    vectors = check_words(words, vectors, uri)
    counts = np.zeros(len(words), np.int64) if counts is None else np.asarray(counts, dtype=np.int64)
    if counts.shape != (len(words),):
        raise ValueError(f"{uri}: {len(words)} words but counts has shape {counts.shape}; pass one count per word")
    with storage.atomic_open(uri, "wb", storage_options) as f:
        np.save(f, vectors, allow_pickle=False)
    text = "".join(f"{w} {c}\n" for w, c in zip(words, counts.tolist()))
    storage.write_bytes(vocab_uri, text.encode("utf-8"), storage_options)


PROJECTOR_MAX_WORDS = 10_000
PROJECTOR_FILES = ("vectors.tsv", "metadata.tsv", "projector_config.pbtxt")


def save_projector(directory: str, words: Sequence[str], vectors: np.ndarray,
                   counts: Sequence[int] | np.ndarray | None = None, max_words: int | None = PROJECTOR_MAX_WORDS,
                   storage_options: dict | None = None, name: str = "word2vec") -> None:
    r"""Write the Embedding Projector's files for the first ``max_words`` rows (the most frequent
    words, as training orders them; ``None``: all) into ``directory``.

    >>> save_projector("memory://doc/proj", ["king", "queen"], np.array([[0.5, -1], [0.25, 2]]), counts=[10, 7])
    >>> storage.read_bytes("memory://doc/proj/metadata.tsv").decode().splitlines()
    ['word\tcount', 'king\t10', 'queen\t7']
    >>> storage.read_bytes("memory://doc/proj/vectors.tsv").decode().splitlines()
    ['0.5\t-1', '0.25\t2']
    """
    n = len(words) if max_words is None else min(max_words, len(words))
    words = list(words[:n])
    vectors = check_words(words, np.asarray(vectors)[:n], directory)
    counts = np.zeros(n, np.int64) if counts is None else np.asarray(counts, dtype=np.int64)[:n]
    with storage.atomic_open(storage.join(directory, "vectors.tsv"), "wb", storage_options) as f:
        for start in range(0, n, _BLOCK_ROWS):
            rows = _float_rows(vectors[start:start + _BLOCK_ROWS], "\t").to_pylist()
            f.write(("\n".join(rows) + "\n").encode("utf-8"))
    metadata = "word\tcount\n" + "".join(f"{w}\t{c}\n" for w, c in zip(words, counts.tolist()))
    storage.write_text(storage.join(directory, "metadata.tsv"), metadata, storage_options)
    config = (f'embeddings {{\n  tensor_name: "{name}"\n  tensor_shape: {n}\n  tensor_shape: {vectors.shape[1]}\n'
              '  tensor_path: "vectors.tsv"\n  metadata_path: "metadata.tsv"\n}\n')
    storage.write_text(storage.join(directory, "projector_config.pbtxt"), config, storage_options)
