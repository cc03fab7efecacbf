"""Trained word vectors, read-only: lookup, cosine neighbours and analogies, load/save.

A small cousin of gensim's ``KeyedVectors`` with the same query semantics (3CosAdd on unit
vectors), loading every format :mod:`w2v_dist.export` writes: word2vec text, word2vec binary and
``.npy`` + ``.vocab.txt``. Formats are told apart by content (``.npy`` magic, then whether the
first record parses as text), so the file name does not have to say; ``.gz``/``.bz2``/``.xz``/``.zst``
files are decompressed on the fly.

Example:

>>> import numpy as np
>>> from w2v_dist.vectors import Vectors
>>> vecs = Vectors(["king", "queen", "man", "woman"],
...                np.array([[1, 1], [1, -1], [2, 1.1], [2, -1]], dtype=np.float32))
>>> vecs.analogy("man", "king", "woman")[0][0]
'queen'
>>> vecs.save("memory://doc/v.bin", "word2vec-binary")  # the files written
['memory://doc/v.bin']
>>> Vectors.load("memory://doc/v.bin").most_similar("king", topn=1)[0][0]
'man'
"""

from __future__ import annotations

import io
import logging
import os
import re
from typing import Iterable, Sequence

import fsspec.utils
import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from w2v_dist import export, storage

log = logging.getLogger(__name__)

FORMATS = ("word2vec", "word2vec-binary", "npy", "projector")
_NPY_MAGIC = b"\x93NUMPY"


class VectorsFormatError(ValueError):
    """A vectors file that cannot be parsed; the message names the file and what is wrong."""


class Vectors:
    """Words and their vectors (row ``i`` is ``words[i]``), with optional corpus counts.

    Rows are expected in descending frequency (as training writes them): ``restrict_vocab=N``
    means "the N most frequent words".
    """

    def __init__(self, words: Sequence[str], vectors: np.ndarray, counts: np.ndarray | None = None):
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != len(words):
            raise ValueError(f"need one vector row per word: {len(words)} words, vectors of shape {vectors.shape}")
        self._words = list(words)
        self._index = {w: i for i, w in enumerate(self._words)}
        if len(self._index) != len(self._words):
            dup = next(w for i, w in enumerate(self._words) if self._index[w] != i)
            raise ValueError(f"duplicate word {dup!r}: each word must appear once")
        # A read-only view: the cached unit matrix would silently go stale if rows changed.
        self._vectors = vectors.view()
        self._vectors.flags.writeable = False
        self.counts = None if counts is None else np.asarray(counts, dtype=np.int64)
        if self.counts is not None and self.counts.shape != (len(words),):
            raise ValueError(f"need one count per word: {len(words)} words, counts of shape {self.counts.shape}")
        self._unit: np.ndarray | None = None
        self._upper: dict[str, str] | None = None  # upper case -> most frequent variant (resolve)

    # ---- lookup -------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._words)

    def __iter__(self):
        """The words, most frequent first (``for word in vectors``, ``list(vectors)``), as a dict's keys."""
        return iter(self._words)

    def __contains__(self, word: object) -> bool:
        return word in self._index

    def __getitem__(self, word: str) -> np.ndarray:
        return self._vectors[self.index(word)]

    def __repr__(self) -> str:
        return f"Vectors({len(self)} words x {self.dim} dims)"

    def index(self, word: str) -> int:
        """Row of ``word``; ``KeyError`` if it is not in the vocabulary."""
        try:
            return self._index[word]
        except KeyError:
            raise KeyError(f"{word!r} is not in the vocabulary ({len(self)} words); check its case and spelling, "
                           f"or train with a lower --min-count") from None

    def resolve(self, word: str) -> str:
        """``word`` if it is in the vocabulary, else its most frequent case variant (the first row
        whose upper case matches, as ``eval`` matches words: ``King`` finds ``king`` in a lowercased
        vocabulary); ``KeyError`` if neither."""
        if word in self._index:
            return word
        if self._upper is None:
            self._upper = {}
            for w in self._words:
                self._upper.setdefault(w.upper(), w)
        if word.upper() in self._upper:
            return self._upper[word.upper()]
        self.index(word)  # raises the KeyError that says what to check
        raise AssertionError("unreachable")

    @property
    def words(self) -> list[str]:
        return self._words

    @property
    def vectors(self) -> np.ndarray:
        return self._vectors

    @property
    def dim(self) -> int:
        return self._vectors.shape[1]

    @property
    def unit(self) -> np.ndarray:
        """Rows scaled to unit length (computed once). All-zero rows stay zero (gensim gives NaN)."""
        if self._unit is None:
            norms = np.linalg.norm(self._vectors, axis=1, keepdims=True)
            unit = self._vectors / np.where(norms > 0, norms, 1)
            unit.flags.writeable = False
            self._unit = unit
        return self._unit

    # ---- queries ------------------------------------------------------------------------------

    def most_similar(self, positive: str | np.ndarray | Iterable[str | np.ndarray], negative: Iterable[str] = (),
                     topn: int = 10, restrict_vocab: int | None = None) -> list[tuple[str, float]]:
        """The ``topn`` words closest (cosine) to mean(unit(positive)) - mean(unit(negative)).

        gensim's ``most_similar``: each word counts with weight +1 or -1, the weighted sum is
        divided by the number of words and normalised; the query words are left out of the
        answer. ``restrict_vocab=N`` searches only the first N rows. A raw vector may stand for a
        positive word (it is used as is, not normalised, as in gensim).
        """
        positive = [positive] if isinstance(positive, (str, np.ndarray)) else list(positive)
        negative = [negative] if isinstance(negative, (str, np.ndarray)) else list(negative)
        if not positive and not negative:
            raise ValueError("most_similar needs at least one positive or negative word")
        if restrict_vocab is not None and restrict_vocab < 1:  # 0 read as "all" below, -5 as all but 5
            raise ValueError(f"restrict_vocab must be >= 1 (the N most frequent words to search) or None, got "
                             f"{restrict_vocab}")
        if topn < 1:
            return []
        query = np.zeros(self.dim, np.float32)
        exclude = []
        for sign, items in ((1.0, positive), (-1.0, negative)):
            for item in items:
                if isinstance(item, np.ndarray):
                    query += sign * np.asarray(item, np.float32)
                else:
                    i = self.index(item)
                    exclude.append(i)
                    query += sign * self.unit[i]
        query /= len(positive) + len(negative)
        norm = np.linalg.norm(query)
        query = query / norm if norm > 0 else query
        limit = min(restrict_vocab or len(self), len(self))
        sims = self.unit[:limit] @ query
        sims[[i for i in exclude if i < limit]] = -np.inf
        k = min(topn, limit)
        best = np.argpartition(-sims, k - 1)[:k] if k < limit else np.arange(limit)
        best = best[np.argsort(-sims[best], kind="stable")]
        return [(self._words[i], float(sims[i])) for i in best if sims[i] != -np.inf]

    def analogy(self, a: str, b: str, c: str, topn: int = 1) -> list[tuple[str, float]]:
        """``a`` is to ``b`` as ``c`` is to ...? (``most_similar(positive=[b, c], negative=[a])``)."""
        return self.most_similar(positive=[b, c], negative=[a], topn=topn)

    def similarity(self, w1: str, w2: str) -> float:
        """Cosine similarity of two words."""
        return float(self.unit[self.index(w1)] @ self.unit[self.index(w2)])

    # ---- files --------------------------------------------------------------------------------

    def save(self, uri: str | os.PathLike, format: str | None = None, storage_options: dict | None = None,
             overwrite: bool = True, max_words: int | None = None) -> list[str]:
        """Write to ``uri`` as ``"word2vec"`` (text), ``"word2vec-binary"``, ``"npy"`` or
        ``"projector"`` (a directory: :func:`w2v_dist.export.save_projector`); returns the files
        written (``npy`` also writes the words to ``<name>.vocab.txt``). With ``overwrite=False`` an
        existing file is a :class:`FileExistsError` and nothing is written.

        Without ``format``: ``.npy`` -> npy, ``.bin`` (or ``.bin.gz``...) -> binary, anything else -> text.
        ``max_words``: only the first (most frequent) N words; the projector's default is 10,000.
        """
        uri = os.fspath(uri)
        if format is None:
            name = uri.rsplit(".", 1)[0] if fsspec.utils.infer_compression(uri) else uri
            format = "npy" if name.endswith(".npy") else "word2vec-binary" if name.endswith(".bin") else "word2vec"
        if format not in FORMATS:
            raise ValueError(f"{uri}: unknown format {format!r}; choose one of {', '.join(FORMATS)}")
        if max_words is not None and max_words < 1:  # the slice would keep all but the last N, silently
            raise ValueError(f"max_words must be >= 1 (the N most frequent words) or None, got {max_words}")
        files = ([storage.join(uri, f) for f in export.PROJECTOR_FILES] if format == "projector" else
                 [uri, export.vocab_sidecar_uri(uri)] if format == "npy" else [uri])
        for f in files if not overwrite else ():
            if storage.exists(f, storage_options):
                raise FileExistsError(f"{f}: exists; pass --overwrite to replace it or choose another --output")
        if format == "projector":
            export.save_projector(uri, self._words, self._vectors, self.counts,
                                  export.PROJECTOR_MAX_WORDS if max_words is None else max_words, storage_options)
            return files
        n = len(self) if max_words is None else min(max_words, len(self))
        words, vectors, counts = self._words[:n], self._vectors[:n], None if self.counts is None else self.counts[:n]
        if format == "npy":
            export.save_npy(uri, words, vectors, counts, storage_options)
        else:
            export.save_word2vec(uri, words, vectors, format == "word2vec-binary", storage_options)
        return files

    @classmethod
    def load(cls, uri: str | os.PathLike, storage_options: dict | None = None) -> Vectors:
        """Read word2vec text, word2vec binary or ``.npy`` (+ ``.vocab.txt``), told apart by content.

        A directory is taken as a training run (:meth:`from_run_dir`).
        """
        uri = os.fspath(uri)  # a pathlib.Path too
        fs, path = storage.url_to_fs(uri, storage_options)
        if fs.isdir(path):
            return cls.from_run_dir(uri, storage_options)
        data = _read(uri, storage_options)
        if data.startswith(_NPY_MAGIC):
            return cls._from_npy(uri, data, storage_options)
        words, vectors = _parse_word2vec(uri, data)
        bad = int((~np.isfinite(vectors).all(axis=1)).sum()) if vectors.size else 0
        if bad:
            log.warning("%s: %d of %d vectors hold NaN or inf (the word %r first): their similarities are NaN",
                        uri, bad, len(words), words[int(np.flatnonzero(~np.isfinite(vectors).all(axis=1))[0])])
        return cls(*_drop_duplicates(uri, words, vectors))

    @classmethod
    def from_run_dir(cls, uri: str, storage_options: dict | None = None) -> Vectors:
        """The final vectors of a finished training run (``<run>/vectors.npy`` + ``<run>/vocab``)."""
        from w2v_dist.vocab import Vocab

        if not storage.exists(storage.join(uri, "summary.json"), storage_options):
            raise FileNotFoundError(f"{uri}: not a finished run (no summary.json); train it to the end first")
        vocab = Vocab.load(storage.join(uri, "vocab"), storage_options)
        data = _read(storage.join(uri, "vectors.npy"), storage_options)
        vectors = np.load(io.BytesIO(data), allow_pickle=False)
        return cls(vocab.words.to_pylist(), vectors, np.asarray(vocab.counts))

    @classmethod
    def _from_npy(cls, uri: str, data: bytes, storage_options: dict | None) -> Vectors:
        try:
            vectors = np.load(io.BytesIO(data), allow_pickle=False)
        except ValueError as e:
            raise VectorsFormatError(f"{uri}: not a readable .npy array ({e})") from None
        if not uri.endswith(".npy"):
            raise VectorsFormatError(f"{uri}: an .npy array, but its words are found only beside a name ending in "
                                     f".npy (<name>.vocab.txt); rename it to <name>.npy")
        vocab_uri = export.vocab_sidecar_uri(uri)
        raw = _read(vocab_uri, storage_options, what="vocabulary sidecar")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            line = raw.count(b"\n", 0, e.start) + 1
            raise VectorsFormatError(f"{vocab_uri}: line {line} is not valid UTF-8 "
                                     f"({raw[e.start:e.start + 8]!r}...); the sidecar must be UTF-8 text") from None
        words, counts = [], []
        # Split as save_npy writes, on "\n" and the last " ": splitlines() and split() also cut at
        # NBSP, U+2028, U+0085, U+3000..., which a word may hold (only word2vec.c's separators are refused)
        for n, line in enumerate(text.removesuffix("\n").split("\n") if text else [], 1):
            word, _, count = line.removesuffix("\r").rpartition(" ")
            if not word or not re.fullmatch(r"-?[0-9]+", count):
                raise VectorsFormatError(f"{vocab_uri}: line {n} is {line!r}, expected 'word count'")
            words.append(word)
            counts.append(int(count))
        if vectors.ndim != 2 or vectors.shape[0] != len(words):
            raise VectorsFormatError(
                f"{uri}: array of shape {vectors.shape} does not match the {len(words)} words of {vocab_uri}; "
                f"re-export both together")
        rows = _first_rows(vocab_uri, words)
        return cls([words[i] for i in rows], vectors[rows], np.array(counts, np.int64)[rows])


def _read(uri: str, storage_options: dict | None, what: str = "vectors file") -> bytes:
    return storage.read_decompressed(uri, storage_options, what, VectorsFormatError)


def _parse_word2vec(uri: str, data: bytes) -> tuple[list[str], np.ndarray]:
    end = data.find(b"\n")
    first = data[:end] if end >= 0 else data
    try:
        n, d = (int(x) for x in first.split())
    except ValueError:
        raise VectorsFormatError(
            f"{uri}: not a word2vec file (first line {first[:60]!r}{'...' if len(first) > 60 else ''} should be "
            "'<words> <dim>'); pass a run directory, a word2vec .bin/.txt or an .npy with its .vocab.txt") from None
    if n < 0 or d < 1:
        raise VectorsFormatError(f"{uri}: its header announces {n} words of {d} dimensions; a word2vec file has 0 "
                                 "or more words of 1 or more")
    if _looks_like_text(data[end + 1:end + 1 + 65536]):
        return _parse_text(uri, memoryview(data)[end + 1:], n, d)
    return _parse_binary(uri, data, end + 1, n, d)


# a record of word2vec text: a word, then numbers as text (nan, inf and Infinity included)
_TEXT_RECORD = re.compile(rb"[^ \n]+[ \t]+[-+0-9.eEnaNiIfFtTyY][-+0-9.eEnaNiIfFtTyY \t\r]*")


def _looks_like_text(head: bytes) -> bool:
    """Whether the first record is a word and numbers written as text, whatever their count (a
    wrong one is then a text file's error, said by its line); raw float32 bytes never are. (Until
    2026-11-28 a text record that did not parse whole, one number short or two spaces after the
    word, was read as binary: garbage words and vectors, exit 0.)"""
    return head == b"" or _TEXT_RECORD.fullmatch(head.split(b"\n", 1)[0]) is not None


def _parse_binary(uri: str, data: bytes, pos: int, n: int, d: int) -> tuple[list[str], np.ndarray]:
    size = 4 * d
    if n * (size + 2) > len(data) - pos:  # each record: a word of a byte or more, a space, d floats
        raise VectorsFormatError(f"{uri}: its header announces {n} words of {d} float32s, more than its "
                                 f"{len(data) - pos:,} bytes hold; the file is truncated or its header is wrong")
    words, vectors = [], np.empty((n, d), np.float32)
    for i in range(n):
        space = data.find(b" ", pos)
        if space < 0 or space + 1 + size > len(data):
            raise VectorsFormatError(
                f"{uri}: ends after {i} of {n} words; the file is truncated or its header is wrong")
        try:
            # lstrip: the '\n' word2vec.c writes after each vector is optional (gensim strips it too)
            words.append(data[pos:space].decode("utf-8").lstrip("\n"))
        except UnicodeDecodeError:
            raise VectorsFormatError(f"{uri}: word #{i} is not valid UTF-8 ({data[pos:space]!r})") from None
        vectors[i] = np.frombuffer(data, "<f4", d, space + 1)
        pos = space + 1 + size
    return words, vectors


def _parse_text(uri: str, body: memoryview, n: int, d: int) -> tuple[list[str], np.ndarray]:
    # Arrow's CSV reader parses the floats in C++ threads (and correctly rounded); tens of times
    # faster than a Python loop over a 1M-word file. Files it refuses (ragged lines) take the
    # slow path, which also finds the bad line for the error message.
    names = [f"f{i}" for i in range(d + 2)]
    types = {"f0": pa.string(), **{f"f{i}": pa.float32() for i in range(1, d + 1)}}
    try:
        table = pacsv.read_csv(
            pa.BufferReader(pa.py_buffer(body)),
            read_options=pacsv.ReadOptions(autogenerate_column_names=True, use_threads=False),
            parse_options=pacsv.ParseOptions(delimiter=" ", quote_char=False, escape_char=False, double_quote=False),
            convert_options=pacsv.ConvertOptions(column_types=types, null_values=[], strings_can_be_null=False),
        )
    except pa.ArrowInvalid:
        table = None
    if table is not None and table.num_rows >= n and (
            table.column_names == names[:d + 1]
            or (table.column_names == names and all(v == "" for v in table.column(d + 1).to_pylist()))):
        table = table.slice(0, n)  # like gensim, ignore anything after the n records
        vectors = np.stack([table.column(i).to_numpy() for i in range(1, d + 1)], axis=1) if n else np.empty((0, d))
        return table.column(0).to_pylist(), vectors.astype(np.float32)
    return _parse_text_slow(uri, bytes(body), n, d)


def _parse_text_slow(uri: str, body: bytes, n: int, d: int) -> tuple[list[str], np.ndarray]:
    lines = body.split(b"\n")
    if len(lines) < n or (len(lines) == n and lines[-1] == b""):
        raise VectorsFormatError(f"{uri}: has fewer than the {n} words its header announces; the file is truncated")
    words, vectors = [], np.empty((n, d), np.float32)
    for i in range(n):
        try:
            parts = lines[i].decode("utf-8").rstrip().split(" ")
        except UnicodeDecodeError as e:
            raise VectorsFormatError(f"{uri}: line {i + 2} is not valid UTF-8 ({lines[i][max(e.start - 8, 0):e.start + 8]!r})"
                                     "; word2vec text must be UTF-8") from None
        try:
            if len(parts) != d + 1:
                raise ValueError
            vectors[i] = [float(x) for x in parts[1:]]
        except ValueError:
            raise VectorsFormatError(
                f"{uri}: line {i + 2} is not 'word' and {d} numbers: {lines[i][:80]!r}...") from None
        words.append(parts[0])
    return words, vectors


def _drop_duplicates(uri: str, words: list[str], vectors: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Keep the first row of a repeated word, as gensim's loader does."""
    rows = _first_rows(uri, words)
    if len(rows) == len(words):
        return words, vectors
    return [words[i] for i in rows], vectors[rows]


def _first_rows(uri: str, words: list[str]) -> np.ndarray:
    """The row of each word's first occurrence, in order; a warning where some word repeats."""
    first: dict[str, int] = {}
    for i, w in enumerate(words):
        first.setdefault(w, i)
    if len(first) != len(words):
        log.warning("%s: %d duplicate words, keeping the first row of each", uri, len(words) - len(first))
    return np.fromiter(first.values(), np.int64, len(first))
