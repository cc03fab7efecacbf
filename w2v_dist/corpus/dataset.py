"""The streaming dataset: shards -> row groups -> token ids, in chunks the kernel trains on.

The unit of work is a row group or a row range of one (:mod:`w2v_dist.corpus.plan`), dealt to
every (rank, DataLoader worker) so that each row is read exactly once per epoch across all of
them. Within a unit, tokens are cut into pieces of about ``batch_words`` words at sentence
boundaries. A chunk carries the token ids, where each sentence starts, and a 64-bit key derived
from ``(seed, epoch, shard, row group, first row, piece)``: every random draw of the chunk
(subsampling, windows, negatives: drawn by the kernel, `Fused.draw`) comes from it, so the
examples of a unit do not depend on which rank or worker reads it.

Filesystems are opened inside the process that reads (fsspec instances are not fork-safe).
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import logging
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torch.utils.data import IterableDataset, get_worker_info

from w2v_dist import storage
from w2v_dist.config import TokenizerConfig
from w2v_dist.corpus.cache import TokenCache
from w2v_dist.corpus.plan import Unit, assign, make_units
from w2v_dist.corpus.shards import CorpusError, Shard, footer_hash, open_parquet, read_row_group
from w2v_dist.corpus.tokenize import Tokenized, encode, is_text_type, tokenize
from w2v_dist.owner import die_with_parent

log = logging.getLogger(__name__)


def split_pieces(tok: Tokenized, batch_words: int) -> list[Tokenized]:
    """Cut at sentence starts into pieces of about ``batch_words`` tokens."""
    n = len(tok)
    if n <= batch_words:
        return [tok]
    starts = np.flatnonzero(np.r_[True, tok.sentence[1:] != tok.sentence[:-1]])
    cuts = np.unique(starts[np.searchsorted(starts, np.arange(batch_words, n, batch_words))
                            .clip(max=len(starts) - 1)])
    cuts = cuts[cuts > 0]
    bounds = np.r_[0, cuts, n]
    return [Tokenized(tok.ids[a:b], tok.sentence[a:b], int(b - a)) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def chunk_key(*parts: int) -> int:
    """A 64-bit key from integers (numpy's SeedSequence hash): the chunk's random stream."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, np.uint64)[0])


@dataclass
class Tokens:
    """A chunk of corpus as the kernel takes it: token ids, sentence starts (then the end), key."""

    ids: np.ndarray  # int32 vocabulary ids, out-of-vocabulary tokens dropped
    starts: np.ndarray  # int64, len = sentences + 1
    key: int
    drawn: Any = None  # the kernel's draws for it, made ahead by the reader's thread (Word2Vec.draw)

    @property
    def words(self) -> int:
        """In-vocabulary words: the unit of learning-rate progress."""
        return len(self.ids)

    @classmethod
    def of(cls, tok: Tokenized, key: int) -> "Tokens":
        starts = np.flatnonzero(np.r_[True, tok.sentence[1:] != tok.sentence[:-1]]) if len(tok) else np.zeros(0, np.int64)
        return cls(tok.ids, np.r_[starts, len(tok)].astype(np.int64), key)

    @classmethod
    def empty(cls) -> "Tokens":
        return cls(np.zeros(0, np.int32), np.zeros(1, np.int64), 0)

    def tokenized(self) -> Tokenized:
        return Tokenized(self.ids, np.repeat(np.arange(len(self.starts) - 1), np.diff(self.starts)), len(self.ids))


@dataclass
class Chunk:
    """Tokens to train on, with where they came from."""

    tokens: Tokens
    epoch: int
    unit: Unit
    index: int  # position of the unit in this (rank, worker)'s list for the epoch
    piece: int
    rank: int = 0
    worker: int = 0  # the logical worker: the same across a resumption
    skipped: dict | None = None  # this worker's running counts of skipped data (--on-bad-shard skip)

    @property
    def position(self) -> list[int]:
        return [self.epoch, self.index, self.piece]


class CorpusStream(IterableDataset):
    """Yields :class:`Chunk` s for epochs ``[start_epoch, epochs)``.

    >>> stream = CorpusStream(shards, vocab_dir, TokenizerConfig(), seed=1, epochs=5)  # doctest: +SKIP
    >>> loader = DataLoader(stream, batch_size=None, num_workers=1)        # doctest: +SKIP
    """

    def __init__(self, shards: list[Shard], vocab_uri: str, tokenizer: TokenizerConfig, *, seed: int, epochs: int,
                 batch_words: int = 10_000,
                 rank: int = 0, world_size: int = 1, storage_options: dict | None = None,
                 vocab_storage_options: dict | None = None, cache_dir: str | None = None, row_tokens: list[list[tuple[int, int]]] | None = None,
                 on_bad: str = "error", token_cache_bytes: float = 0, prepare_threads: int = 1):
        self.shards = shards
        self.vocab_uri = vocab_uri
        self.tokenizer = tokenizer
        self.seed, self.epochs, self.batch_words = seed, epochs, batch_words
        self.rank, self.world_size = rank, world_size
        self.storage_options = storage_options  # the shards'
        # the run's vocabulary (by default with the shards' options)
        self.vocab_storage_options = storage_options if vocab_storage_options is None else vocab_storage_options
        self.cache_dir = cache_dir
        # (rows, tokens) of every row group; without counts, rows stand in for tokens
        self.row_tokens = row_tokens or [[(n, n) for n in s.row_groups] for s in shards]
        self.on_bad = on_bad
        self.token_cache_bytes = token_cache_bytes  # corpus/cache.py; 0: tokenize every epoch
        # units tokenized at once: the cores the kernel leaves (a thread taken from a kernel step
        # stalls the step: docs/training.md)
        self.prepare_threads = prepare_threads
        self.start_epoch = 0
        self.resume: dict = {}

    def state_dict(self) -> dict:
        return {"start_epoch": self.start_epoch, "resume": self.resume}

    def load_state_dict(self, state: dict) -> None:
        """``start_epoch``: begin there. ``resume``: where each worker stopped, from the trainer's
        :class:`~w2v_dist.training.Feed` state: ``{"after": {worker: [epoch, index, piece]},
        "first": worker}``. Worker ``first`` restarts *at* its position (the trainer skips what it
        had used of that chunk), the others right after theirs; DataLoader worker 0 plays worker
        ``first``, so the round-robin order of chunks continues as it was."""
        self.start_epoch = int(state.get("start_epoch", 0))
        self.resume = dict(state.get("resume") or {})

    def _worker(self) -> tuple[int, int]:
        info = get_worker_info()
        return (info.id, info.num_workers) if info else (0, 1)

    def __iter__(self) -> Iterator[Chunk]:
        from w2v_dist.vocab import Vocab  # loaded here, in the worker: the files are mapped, not pickled

        vocab = Vocab.load(self.vocab_uri, self.vocab_storage_options, self.cache_dir)
        dl_worker, workers = self._worker()
        first = self.resume.get("first")
        worker = (dl_worker + (int(first) if first is not None else 0)) % workers
        after = self.resume.get("after", {}).get(str(worker))
        slots = self.world_size * workers
        units = make_units(self.row_tokens, slots)
        cache = TokenCache(self.cache_dir, vocab.meta["fingerprint"], dataclasses.asdict(self.tokenizer),
                           self.token_cache_bytes)
        skipped: collections.Counter = collections.Counter()  # this worker's running counts
        with _ReadAhead(self.shards, self.storage_options, self.on_bad,
                        lambda column: encode(column, vocab.words, self.tokenizer), self.prepare_threads) as ahead:
            for epoch in range(self.start_epoch, self.epochs):
                mine = assign(units, slots, self.seed, epoch)[self.rank * workers + worker]
                todo = [i for i in range(len(mine)) if after is None or [epoch, i] >= after[:2]]
                ahead.plan([mine[i] for i in todo if not cache.has(self.shards[mine[i].shard], mine[i])])
                for i in todo:
                    unit = mine[i]
                    tok = None if ahead.planned(unit) else cache.get(self.shards[unit.shard], unit)
                    if tok is None:
                        tok, delta = ahead.take(unit)
                        skipped += delta
                        if tok is None:  # skipped as unreadable (counted); its slot still moves on
                            if after is None or [epoch, i, 0] > after:
                                yield Chunk(Tokens.empty(), epoch, unit, i, 0, self.rank, worker, dict(skipped))
                            continue
                        if not delta:
                            cache.put(self.shards[unit.shard], unit, tok)
                    for p, piece in enumerate(split_pieces(tok, self.batch_words)):
                        if after is not None and [epoch, i, p] <= after:
                            continue
                        key = chunk_key(self.seed, epoch, unit.shard, unit.row_group, unit.start, p)
                        yield Chunk(Tokens.of(piece, key), epoch, unit, i, p, self.rank, worker, dict(skipped))


def _thread_of(shard: int, row_group: int, threads: int) -> int:
    """The reader thread of a row group: all its pieces on one (it keeps the row group for the
    pieces to come), row groups spread over all (a corpus of one file is read in parallel)."""
    return (shard * 7919 + row_group) % threads


class _ReadAhead:
    """Fetches the units a reader will need, ``AHEAD`` units before it needs them, on ``READERS``
    threads (:func:`_thread_of`), and prepares (tokenizes) them in order on ``prepare_threads``
    others, as they arrive. The network's latency and the tokenizer's time are then spent beside
    training, on the cores the kernel leaves, instead of between its steps; memory holds at most
    ``AHEAD`` units in flight and each reader's ``HOLD_BYTES``. What is read, and so what is
    trained, does not change: only when and where."""

    def __init__(self, shards: list[Shard], storage_options: dict | None, on_bad: str, prepare,
                 prepare_threads: int = 1):
        footers = _Footers()
        self.readers = [_RowGroupReader(shards, storage_options, on_bad, footers) for _ in range(READERS)]
        self.prepare = prepare
        self.threads = [ThreadPoolExecutor(1, thread_name_prefix="w2v_dist-read") for _ in range(READERS)]
        self.preparers = ThreadPoolExecutor(max(1, prepare_threads), thread_name_prefix="w2v_dist-tokenize")
        self.queue: list[Unit] = []
        self.next = 0
        self.pending: dict[Unit, object] = {}

    def plan(self, units: list[Unit]) -> None:
        """The units to fetch, in the order they will be taken (after the ones taken before)."""
        self.queue, self.next = list(units), 0
        last = {(u.shard, u.row_group): k for k, u in enumerate(self.queue)}
        self.keep = [last[(u.shard, u.row_group)] > k for k, u in enumerate(self.queue)]
        self._fill()

    def planned(self, unit: Unit) -> bool:
        return unit in self.pending

    def _fill(self) -> None:
        while len(self.pending) < AHEAD and self.next < len(self.queue):
            unit, keep = self.queue[self.next], self.keep[self.next]
            self.pending[unit] = self._submit(unit, keep)
            self.next += 1

    def _submit(self, unit: Unit, keep: bool):
        k = _thread_of(unit.shard, unit.row_group, READERS)
        fetched = self.threads[k].submit(self.readers[k].fetch, unit, keep)
        return self.preparers.submit(self._prepared, fetched)

    def _prepared(self, fetched) -> tuple[object, collections.Counter]:
        column, skipped = fetched.result()
        return (None if column is None else self.prepare(column)), skipped

    def take(self, unit: Unit) -> tuple[object, collections.Counter]:
        """The unit prepared (``None``: skipped as unreadable) and what reading it skipped: done
        ahead, or now (a unit the token cache had when planned but could not serve)."""
        future = self.pending.pop(unit, None)
        if future is None:
            future = self._submit(unit, False)
        try:
            return future.result()
        finally:
            self._fill()

    def __enter__(self) -> "_ReadAhead":
        return self

    def __exit__(self, *exc) -> None:
        for t in self.threads:  # what is queued is dropped; the reads in flight end first
            t.shutdown(wait=False, cancel_futures=True)
        self.preparers.shutdown(wait=True, cancel_futures=True)
        for t in self.threads:
            t.shutdown(wait=True)


class BadData(CorpusError):
    """Data that cannot be read, found while reading (a bad page, a vanished file, bad UTF-8)."""


class ChangedFile(OSError):
    """A shard that is not the one listed: read as bad data (``--on-bad-shard``), never trained on."""


# Footers a reader keeps (``FileMetaData``, a few KB each): going back to a file it read before
# costs no footer read (the manifest was read from them too, but on rank 0 and not kept).
FOOTERS_KEPT = 1024
# Text a reader keeps of row groups cut into several units of its list, for the units still to come:
# a unit that is part of a row group reads the whole row group (Parquet reads column chunks), so
# without this a row group cut in k pieces would be fetched k times an epoch. Beyond the budget a
# row group is fetched again when its next piece comes.
HOLD_BYTES = 64 << 20
# Units fetched ahead of the one being trained, and the threads fetching them (each with its own
# open file; a row group's pieces on one thread: _thread_of). 4 requests in flight hide most of a
# store's round trips (docs/benchmarks.md, "Reading while training").
AHEAD = 4
READERS = 4


class _Footers:
    """The footers (``FileMetaData``) of the files read so far, shared by a process's reader
    threads, the last ``FOOTERS_KEPT``. A file's first open holds that file's lock, so that its
    footer is fetched once whichever threads read it (and no other file waits on it)."""

    def __init__(self):
        self.kept: collections.OrderedDict[int, object] = collections.OrderedDict()
        self.opening: dict[int, threading.Lock] = {}
        self.lock = threading.Lock()

    def _known(self, s: int):
        with self.lock:
            known = self.kept.get(s)
            if known is not None:
                self.kept.move_to_end(s)
            return known

    def open(self, s: int, shard: Shard, storage_options: dict | None):
        known = self._known(s)
        if known is None:
            with self.lock:
                first = self.opening.setdefault(s, threading.Lock())
            with first:
                known = self._known(s)
                if known is None:
                    pf = open_parquet(shard.uri, storage_options, None, shard.size)
                    if shard.footer and footer_hash(pf.metadata) != shard.footer:
                        raise ChangedFile(f"{shard.uri}: not the file the corpus was listed with (its Parquet "
                                          "footer differs: rewritten since, or another node's copy); put it back, "
                                          "or start again with --overwrite")
                    with self.lock:
                        self.kept[s] = pf.metadata
                        self.opening.pop(s, None)
                        if len(self.kept) > FOOTERS_KEPT:
                            self.kept.popitem(last=False)
                    return pf
        return open_parquet(shard.uri, storage_options, known, shard.size)


class _RowGroupReader:
    """Reads the rows of a unit. Keeps the open file, the footers of the files read (shared with
    the process's other readers), and the text of row groups whose other pieces it is told are
    still to come (``read(unit, keep=True)``).

    Problems found while reading: a file that vanished since it was listed, a corrupt page, text
    that is not UTF-8 (pyarrow does not check on read). ``on_bad="error"`` raises :class:`BadData`
    naming the file, row group and fix; ``"skip"`` leaves out the unit (or the bad rows) and counts
    it in ``self.skipped``.
    """

    def __init__(self, shards: list[Shard], storage_options: dict | None, on_bad: str = "error",
                 footers: _Footers | None = None):
        self.shards, self.storage_options, self.on_bad = shards, storage_options, on_bad
        self.file: tuple[int, object] | None = None
        self.footers = footers or _Footers()
        self.held: dict[tuple[int, int], pa.ChunkedArray | None] = {}
        self.skipped: collections.Counter = collections.Counter()

    def _skip(self, what: str, message: str, n: int = 1) -> None:
        if self.on_bad == "error":
            raise BadData(message + "; pass --on-bad-shard skip to leave such data out")
        log.warning("skipping: %s", message)
        self.skipped[what] += n

    def read(self, unit: Unit, keep: bool = False) -> pa.ChunkedArray | None:
        """The unit's rows; ``keep``: another piece of its row group comes later, hold the text
        (within ``HOLD_BYTES``)."""
        key = (unit.shard, unit.row_group)
        if key in self.held:
            column = self.held.pop(key)
        else:
            column = self._read_group(*key)
        if keep and (column is None or sum(c.nbytes for c in self.held.values() if c is not None)
                     + column.nbytes <= HOLD_BYTES):
            self.held[key] = column
        return None if column is None else column.slice(unit.start, unit.stop - unit.start)

    def fetch(self, unit: Unit, keep: bool, prepare=None) -> tuple[object, collections.Counter]:
        """:meth:`read` (then ``prepare`` of it, if given; ``None`` for a unit skipped as
        unreadable), and what reading it skipped: a reader thread's work."""
        before = collections.Counter(self.skipped)
        column = self.read(unit, keep)
        if column is not None and prepare is not None:
            column = prepare(column)
        return column, self.skipped - before

    def _read_group(self, s: int, g: int) -> pa.ChunkedArray | None:
        shard = self.shards[s]
        where = f"{shard.uri} row group {g}"
        try:
            if self.file is None or self.file[0] != s:
                self.file = None
                self.file = (s, self.footers.open(s, shard, self.storage_options))
            column = read_row_group(self.file[1], shard, g)
        except FileNotFoundError:
            self._skip("vanished_row_groups", f"{shard.uri}: the file disappeared after it was listed")
            return None
        except storage.StorageError:
            raise
        except Exception as e:
            if storage.unavailable(e):  # the store, not the data: never skipped (docs/storage.md)
                raise storage.unavailable_error(shard.uri, e) from None
            if not isinstance(e, (OSError, pa.ArrowException)):
                raise
            self._skip("bad_row_groups", f"{where}: cannot be read ({e})")
            return None
        if column.null_count:
            self.skipped["null_rows"] += column.null_count
        return self._valid_utf8(column, where)

    def _valid_utf8(self, column: pa.ChunkedArray, where: str) -> pa.ChunkedArray:
        try:
            column.validate(full=True)
            return column
        except pa.ArrowInvalid:
            pass
        # rare: find the offending rows (Python per row, only for a row group that failed)
        flat = column.combine_chunks()
        values = flat.flatten() if not is_text_type(flat.type) else flat
        ok = []
        for v in values.cast(pa.binary()).to_pylist():
            try:
                if v is not None:
                    v.decode("utf-8")
                ok.append(True)
            except UnicodeDecodeError:
                ok.append(False)
        ok = np.array(ok, dtype=bool)
        if not is_text_type(flat.type):  # list<string>: drop the rows holding a bad token
            parents = pc.list_parent_indices(flat).to_numpy()
            row_ok = np.ones(len(flat), dtype=bool)
            row_ok[parents[~ok]] = False
            ok = row_ok
        bad = int((~ok).sum())
        self._skip("non_utf8_rows", f"{where}: {bad} row(s) are not valid UTF-8", bad)
        return pa.chunked_array([flat.filter(pa.array(ok))])


# Row groups the vocabulary pass reads ahead of the one it counts: an object store answers every
# read in a round trip, and 10,000 small shards read one after another wait minutes on them
# (docs/benchmarks.md). Bounds the text held in memory to this many row groups.
READ_AHEAD = 8


def token_stream(shards: list[Shard], tokenizer: TokenizerConfig, rank: int = 0, world_size: int = 1,
                 storage_options: dict | None = None, on_bad: str = "error",
                 skipped: dict | None = None, prepare=None) -> Iterator[tuple[int, int, pa.Array | None]]:
    """``(shard, row group, tokens)`` of this rank's share of the row groups (for counting), in
    order, read ``READ_AHEAD`` row groups ahead; the tokens are ``None`` for a row group that was
    skipped as unreadable. ``prepare(column)``, if given, replaces tokenizing (``w2v-dist encode``
    makes its ids in these threads). Reading every row group here, before training, is what finds
    bad pages and bad UTF-8 early.

    ``READ_AHEAD`` reader threads, which tokenize what they read too (pyarrow's regex kernels
    release the GIL: a corpus is counted on all the cores); each keeps its open file, and a
    file's footer is read once for all of them."""
    groups = [(s, g) for s, shard in enumerate(shards) for g, n in enumerate(shard.row_groups) if n > 0]
    mine = iter(groups[rank::world_size])
    footers = _Footers()
    readers = [_RowGroupReader(shards, storage_options, on_bad, footers) for _ in range(READ_AHEAD)]
    threads = [ThreadPoolExecutor(1, thread_name_prefix="w2v_dist-count") for _ in range(READ_AHEAD)]

    def count(column):
        return tokenize(column, tokenizer)[0] if prepare is None else prepare(column)

    def submit(s: int, g: int):
        k = _thread_of(s, g, READ_AHEAD)
        unit = Unit(s, g, 0, shards[s].row_groups[g], 0)
        return (s, g), threads[k].submit(lambda: readers[k].fetch(unit, False, count)[0])

    try:
        pending = collections.deque(submit(*sg) for sg in itertools.islice(mine, READ_AHEAD))
        while pending:
            (s, g), future = pending.popleft()
            tokens = future.result()
            following = next(mine, None)
            if following is not None:
                pending.append(submit(*following))
            yield s, g, tokens
    finally:
        for t in threads:  # the reads in flight end first (docs: train.prefetch)
            t.shutdown(wait=True, cancel_futures=True)
    if skipped is not None:
        for reader in readers:
            for k, v in reader.skipped.items():
                skipped[k] = skipped.get(k, 0) + v


def identity(x):
    """DataLoader ``collate_fn``: chunks are already batches."""
    return x


def logging_setup() -> dict | None:
    """This process's logging, as a reader process needs it to log alike: the DataLoader starts its
    readers with ``spawn``, bare, and their warnings (a token cache that cannot be written, a shard
    skipped) came out without the time, the level or the rank."""
    root = logging.getLogger()
    fmt = next((h.formatter for h in root.handlers if h.formatter is not None), None)
    if fmt is None:
        return None
    return {"format": fmt._fmt, "datefmt": fmt.datefmt, "level": root.level,
            "ours": logging.getLogger("w2v_dist").level}


def worker_init(_worker_id: int, log: dict | None = None) -> None:
    """Each reader process: ``log`` is the trainer's :func:`logging_setup`, repeated here."""
    if log is not None:
        logging.basicConfig(level=log["level"], format=log["format"], datefmt=log["datefmt"])
        logging.getLogger("w2v_dist").setLevel(log["ours"])
    # the trainer owns the cores; readers stay single-threaded
    pa.set_cpu_count(1)
    torch.set_num_threads(1)
    # Ctrl-C and preemption are the trainer's to handle (it finishes the step and checkpoints);
    # a reader that died of them would take the DataLoader down first
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    die_with_parent()  # a reader whose trainer was killed must not live on holding its pipes
