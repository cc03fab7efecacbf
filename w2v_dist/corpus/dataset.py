"""The streaming dataset: shards -> row groups -> token ids -> training examples.

The unit of work is one row group. Each epoch the units are shuffled from ``(seed, epoch)`` and
dealt round-robin to every (rank, DataLoader worker), so each row is read exactly once per
epoch across all of them. Within a unit, tokens are cut into pieces of about ``batch_words``
words at sentence boundaries; every random draw of a piece (subsampling, windows, negatives)
comes from a generator keyed by ``(seed, epoch, shard, row group, piece)``, so the examples do
not depend on how many workers or ranks there are, or on the order they run in.

Filesystems are opened inside the process that reads (fsspec instances are not fork-safe).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import pyarrow as pa
import torch
from torch.utils.data import IterableDataset, get_worker_info

from w2v_dist.config import TokenizerConfig
from w2v_dist.corpus.shards import Shard, open_parquet, read_row_group
from w2v_dist.corpus.tokenize import Tokenized, encode, tokenize
from w2v_dist.pairs import Examples, make_examples


def plan(shards: list[Shard], seed: int, epoch: int) -> list[tuple[int, int]]:
    """Every (shard, row group) with rows, in this epoch's order: a pure function of its inputs."""
    units = [(s, g) for s, shard in enumerate(shards) for g, n in enumerate(shard.row_groups) if n > 0]
    order = np.random.default_rng([seed, epoch, 0x5EED]).permutation(len(units))
    return [units[i] for i in order]


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


@dataclass
class Chunk:
    """Training examples with where they came from."""

    examples: Examples
    epoch: int
    unit: int  # index in this epoch's plan
    piece: int
    meta: dict = field(default_factory=dict)


class CorpusStream(IterableDataset):
    """Yields :class:`Chunk` s for epochs ``[start_epoch, epochs)``.

    >>> stream = CorpusStream(shards, vocab_dir, TokenizerConfig(), model="sg", window=5,
    ...                       negative=5, seed=1, epochs=5)                 # doctest: +SKIP
    >>> loader = DataLoader(stream, batch_size=None, num_workers=1)        # doctest: +SKIP
    """

    def __init__(self, shards: list[Shard], vocab_uri: str, tokenizer: TokenizerConfig, *, model: str,
                 window: int, negative: int, seed: int, epochs: int, batch_words: int = 10_000,
                 rank: int = 0, world_size: int = 1, storage_options: dict | None = None,
                 cache_dir: str | None = None):
        self.shards = shards
        self.vocab_uri = vocab_uri
        self.tokenizer = tokenizer
        self.model, self.window, self.negative = model, window, negative
        self.seed, self.epochs, self.batch_words = seed, epochs, batch_words
        self.rank, self.world_size = rank, world_size
        self.storage_options = storage_options
        self.cache_dir = cache_dir
        self.start_epoch = 0

    def state_dict(self) -> dict:
        return {"start_epoch": self.start_epoch, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        self.start_epoch = int(state["start_epoch"])

    def _slot(self) -> tuple[int, int]:
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        return self.rank * nw + wid, self.world_size * nw

    def __iter__(self) -> Iterator[Chunk]:
        from w2v_dist.vocab import Vocab  # loaded here, in the worker: the files are mapped, not pickled

        vocab = Vocab.load(self.vocab_uri, self.storage_options, self.cache_dir)
        sampler = vocab.sampler
        slot, slots = self._slot()
        files: dict[int, object] = {}
        for epoch in range(self.start_epoch, self.epochs):
            units = plan(self.shards, self.seed, epoch)
            for u in range(slot, len(units), slots):
                s, g = units[u]
                if s not in files:
                    files = {s: open_parquet(self.shards[s].uri, self.storage_options)}  # one file open at a time
                column = read_row_group(files[s], self.shards[s], g)
                tok = encode(column, vocab.words, self.tokenizer)
                for p, piece in enumerate(split_pieces(tok, self.batch_words)):
                    rng = np.random.default_rng([self.seed, epoch, s, g, p])
                    ex = make_examples(piece, self.model, self.window, vocab.keep_prob, sampler, self.negative, rng)
                    yield Chunk(ex, epoch, u, p)


def token_stream(shards: list[Shard], tokenizer: TokenizerConfig, rank: int = 0, world_size: int = 1,
                 storage_options: dict | None = None) -> Iterator[pa.Array]:
    """Tokens of every row group of this rank's share (for counting the vocabulary)."""
    units = [(s, g) for s, shard in enumerate(shards) for g, n in enumerate(shard.row_groups) if n > 0]
    for s, g in units[rank::world_size]:
        pf = open_parquet(shards[s].uri, storage_options)
        tokens, _ = tokenize(read_row_group(pf, shards[s], g), tokenizer)
        yield tokens


def identity(x):
    """DataLoader ``collate_fn``: chunks are already batches."""
    return x


def worker_init(_worker_id: int) -> None:
    # the trainer owns the cores; readers stay single-threaded
    pa.set_cpu_count(1)
    torch.set_num_threads(1)
