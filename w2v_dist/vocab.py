"""The vocabulary: counted in one streaming pass, written once as ``.npy`` files that every
process maps (``np.load(..., mmap_mode='r')``) instead of copying.

Files in ``<run>/vocab/``:

=================  =======================================================================
``counts.npy``     int64 corpus count of each word, sorted by count (desc), then word
``keep_prob.npy``  float32 word2vec.c subsampling keep-probability ``min(1, (sqrt(f/t)+1) t/f)``
``neg_prob.npy``   float32 alias-table probabilities of the unigram^0.75 negative sampler
``neg_alias.npy``  int32 alias-table partners (Walker/Vose; exact, unlike a 1e8-slot table)
``word_offsets.npy`` / ``word_bytes.npy``  the words: int64 offsets into UTF-8 bytes, which
                   become a zero-copy Arrow string array for ``pyarrow.compute.index_in``
``vocab.json``     size, total words, options and a fingerprint; written last (commit marker)
=================  =======================================================================

Counting uses pyarrow (``value_counts`` per row group, ``group_by().aggregate`` to merge), and
prunes by gensim's ``max_vocab_size`` rule: when the table of distinct tokens grows past the limit,
tokens with count <= ``min_reduce`` are dropped and ``min_reduce`` grows by one. gensim checks
after every sentence, we after each merge (a row group's counts, or 2M rows of them): the table
holds at most the limit plus one merge's new words, and where pruning happens the words kept
differ from gensim's (50k lines of gcide at a limit of 5,000: 4,562 words here, 1,220 in gensim,
whose many small prunings each raise ``min_reduce``; with no pruning the two are equal).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from w2v_dist import storage
from w2v_dist.pairs import NegativeSampler

log = logging.getLogger(__name__)

FILES = ("counts.npy", "keep_prob.npy", "neg_prob.npy", "neg_alias.npy", "word_offsets.npy", "word_bytes.npy")


class VocabError(ValueError):
    """A vocabulary that cannot be trained on (empty after --min-count, say)."""


class Counter:
    """Streaming token counts with bounded memory (gensim's ``max_vocab_size`` rule, per merge)."""

    MERGE_EVERY = 1 << 21  # rows of pending per-chunk counts before they are merged

    def __init__(self, max_vocab_size: int | None = None):
        self.max_vocab_size = max_vocab_size
        self.min_reduce = 1
        self.table = pa.table({"word": pa.array([], pa.string()), "count": pa.array([], pa.int64())})
        self.pending: list[pa.Table] = []
        self.pending_rows = 0
        self.tokens = 0

    def add(self, tokens: pa.Array) -> None:
        if len(tokens) == 0:
            return
        self.tokens += len(tokens)
        vc = pc.value_counts(tokens)
        self.add_counts(pa.table({"word": vc.field("values").cast(pa.string()), "count": vc.field("counts")}))

    def add_counts(self, table: pa.Table) -> None:
        self.pending.append(table)
        self.pending_rows += len(table)
        # merged (and pruned) once the pending counts could hold the cap's worth of new words: the
        # table stays near the cap, as gensim's is pruned when it passes it
        if self.pending_rows >= min(self.MERGE_EVERY, self.max_vocab_size or self.MERGE_EVERY):
            self._merge()

    def _merge(self) -> None:
        if not self.pending:
            return
        both = pa.concat_tables([self.table, *self.pending])
        self.pending, self.pending_rows = [], 0
        merged = both.group_by("word", use_threads=False).aggregate([("count", "sum")])
        self.table = merged.rename_columns(["word", "count"])
        while self.max_vocab_size is not None and len(self.table) > self.max_vocab_size:
            self.table = self.table.filter(pc.greater(self.table["count"], self.min_reduce))
            self.min_reduce += 1

    def result(self) -> pa.Table:
        self._merge()
        return self.table


@dataclass
class Vocab:
    words: pa.Array  # string array, index = word id
    counts: np.ndarray
    keep_prob: np.ndarray
    neg_prob: np.ndarray
    neg_alias: np.ndarray
    meta: dict

    def __len__(self) -> int:
        return len(self.counts)

    @property
    def total_words(self) -> int:
        """In-vocabulary words in one pass over the corpus: the learning-rate schedule's unit."""
        return int(self.meta["total_words"])

    @property
    def sampler(self) -> NegativeSampler:
        return NegativeSampler(self.neg_prob, self.neg_alias)

    @classmethod
    def build(cls, counts_table: pa.Table, min_count: int = 5, max_vocab: int | None = None,
              sample: float = 1e-3, raw_tokens: int | None = None, source: str = "") -> "Vocab":
        t = counts_table.filter(pc.greater_equal(counts_table["count"], min_count))
        # by count descending, ties by word: the same order however the counts were gathered
        t = t.sort_by([("count", "descending"), ("word", "ascending")])
        if max_vocab is not None:
            t = t.slice(0, max_vocab)
        if len(t) == 0:
            raise VocabError(
                f"the vocabulary is empty: no token of {source or 'the corpus'} occurs at least "
                f"--min-count={min_count} times (lower --min-count or add data)")
        words = t["word"].combine_chunks()
        counts = t["count"].to_numpy().astype(np.int64)
        total = int(counts.sum())
        if sample > 0:
            thr = sample * total
            keep = np.minimum(1.0, (np.sqrt(counts / thr) + 1.0) * thr / counts)
        else:
            keep = np.ones(len(counts))
        neg_prob, neg_alias = NegativeSampler.build(counts.astype(np.float64) ** 0.75)
        meta = {
            "size": len(counts), "total_words": total, "raw_tokens": raw_tokens, "min_count": min_count,
            "max_vocab": max_vocab, "sample": sample, "fingerprint": fingerprint(words, counts),
        }
        return cls(words, counts, keep.astype(np.float32), neg_prob, neg_alias, meta)

    def save(self, uri: str, storage_options: dict | None = None) -> None:
        """Write the files, ``vocab.json`` last so a reader never sees a partial vocabulary."""
        offsets, data = _string_buffers(self.words)
        arrays = {"counts.npy": self.counts, "keep_prob.npy": self.keep_prob, "neg_prob.npy": self.neg_prob,
                  "neg_alias.npy": self.neg_alias, "word_offsets.npy": offsets, "word_bytes.npy": data}
        for name, arr in arrays.items():
            buf = io.BytesIO()
            np.save(buf, arr)
            storage.write_bytes(storage.join(uri, name), buf.getvalue(), storage_options)
        storage.write_text(storage.join(uri, "vocab.json"), json.dumps(self.meta, indent=2), storage_options)

    @classmethod
    def load(cls, uri: str, storage_options: dict | None = None, cache_dir: str | None = None) -> "Vocab":
        """Map the files read-only. A remote vocabulary is first copied into ``cache_dir``."""
        meta_uri = storage.join(uri, "vocab.json")
        if not storage.exists(meta_uri, storage_options):
            raise VocabError(f"{uri}: no vocabulary here (vocab.json missing)")
        try:
            meta = json.loads(storage.read_bytes(meta_uri, storage_options))
        except ValueError as e:
            raise VocabError(f"{meta_uri}: damaged ({e}); train again with --overwrite (or encode again)") from None
        local = storage.local_path(uri) if storage.is_local(uri) else _cache_copy(uri, meta, storage_options, cache_dir)
        arr = {}
        for name in FILES:
            try:
                arr[name] = np.load(os.path.join(local, name), mmap_mode="r")
            except (ValueError, EOFError, OSError) as e:  # cut short: 'mmap length is greater than file size'
                if isinstance(e, FileNotFoundError):
                    raise VocabError(f"{storage.join(uri, name)}: missing from the vocabulary") from None
                raise VocabError(f"{storage.join(uri, name)}: damaged ({e}); train again with --overwrite (or "
                                 "encode again)") from None
        offsets, data = arr["word_offsets.npy"], arr["word_bytes.npy"]
        words = pa.Array.from_buffers(pa.large_string(), len(offsets) - 1, [None, pa.py_buffer(offsets), pa.py_buffer(data)])
        if len(data) < 2**31:
            words = words.cast(pa.string())  # index_in wants the tokens' type
        return cls(words, arr["counts.npy"], arr["keep_prob.npy"], arr["neg_prob.npy"], arr["neg_alias.npy"], meta)


def fingerprint(words: pa.Array, counts: np.ndarray) -> str:
    offsets, data = _string_buffers(words)
    h = hashlib.sha256()
    for a in (offsets, data, counts.astype(np.int64)):
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:32]


def _string_buffers(words: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    large = words.cast(pa.large_string())
    if large.offset != 0:
        large = pa.concat_arrays([large])
    _, off_buf, data_buf = large.buffers()
    offsets = np.frombuffer(off_buf, dtype=np.int64, count=len(large) + 1)
    data = np.frombuffer(data_buf, dtype=np.uint8, count=int(offsets[-1])) if data_buf is not None else np.zeros(0, np.uint8)
    return offsets - offsets[0], data[offsets[0]:]


def _cache_copy(uri: str, meta: dict, storage_options: dict | None, cache_dir: str | None) -> str:
    """One local copy per node, keyed by fingerprint; files appear atomically."""
    base = cache_dir or os.path.join(tempfile.gettempdir(), "w2v_dist-cache")
    local = os.path.join(base, "vocab-" + meta["fingerprint"])
    if not os.path.exists(os.path.join(local, "vocab.json")):
        os.makedirs(base, exist_ok=True)
        tmp = tempfile.mkdtemp(dir=base)
        for name in (*FILES, "vocab.json"):
            with open(os.path.join(tmp, name), "wb") as f:
                f.write(storage.read_bytes(storage.join(uri, name), storage_options))
        try:
            os.replace(tmp, local)
        except OSError:  # another process of this node got there first
            shutil.rmtree(tmp, ignore_errors=True)
    return local
