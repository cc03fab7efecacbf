"""The streaming dataset: shard checks, exactly-once reading, repeatable examples."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from torch.utils.data import DataLoader

from tests.conftest import write_shards
from w2v_dist.config import TokenizerConfig
from w2v_dist.corpus.dataset import CorpusStream, identity, token_stream
from w2v_dist.corpus.plan import assign, make_units
from w2v_dist.corpus.shards import CorpusError, scan_shards
from w2v_dist.vocab import Counter as VocabCounter, Vocab


def _numbered(n):
    return [f"w{i} common words here" for i in range(n)]


@pytest.fixture()
def corpus(tmp_path):
    d = write_shards(tmp_path / "c", _numbered(3000), shards=3, row_group=400)
    pq.write_table(pa.table({"text": pa.array([], pa.string())}), d / "part-00009.parquet")  # an empty shard
    shards = scan_shards(str(d))
    c = VocabCounter()
    for _, _, t in token_stream(shards, TokenizerConfig()):
        c.add(t)
    Vocab.build(c.result(), min_count=1, sample=0).save(str(tmp_path / "vocab"))
    return shards, str(tmp_path / "vocab")


def _stream(shards, vocab, **kw):
    opts = dict(seed=3, epochs=2, batch_words=500)
    opts.update(kw)
    return CorpusStream(shards, vocab, TokenizerConfig(), **opts)


@pytest.mark.parametrize("workers", [0, 2])
def test_every_row_once_per_epoch(corpus, workers):
    shards, vocab_dir = corpus
    vocab = Vocab.load(vocab_dir)
    words = vocab.words.to_pylist()
    loader = DataLoader(_stream(shards, vocab_dir), batch_size=None, num_workers=workers, collate_fn=identity)
    seen = {0: Counter(), 1: Counter()}
    for chunk in loader:
        seen[chunk.epoch].update(words[i] for i in chunk.tokens.ids if words[i][1:].isdigit())
    for epoch in (0, 1):
        assert seen[epoch] == Counter({f"w{i}": 1 for i in range(3000)})


def test_examples_of_a_unit_do_not_depend_on_who_reads_it(corpus):
    """The kernel draws a chunk's examples from its key: the same unit gives the same tokens and
    key whether two reader processes of one rank or two ranks of one reader read the corpus (both
    are two slots: the same units)."""
    shards, vocab_dir = corpus

    def collect(chunks):
        return {(c.epoch, c.unit, c.piece): (c.tokens.ids.copy(), (c.tokens.starts.tolist(), c.tokens.key))
                for c in chunks}
    readers = collect(DataLoader(_stream(shards, vocab_dir), batch_size=None, num_workers=2, collate_fn=identity))
    ranks = collect(c for r in (0, 1) for c in _stream(shards, vocab_dir, rank=r, world_size=2))
    assert readers.keys() == ranks.keys() and len(readers) >= 6
    for k in readers:
        np.testing.assert_array_equal(readers[k][0], ranks[k][0])
        assert readers[k][1] == ranks[k][1]


def test_plan_is_shuffled_per_epoch_and_skips_empty_row_groups(corpus):
    shards, _ = corpus
    units = make_units([[(n, n) for n in s.row_groups] for s in shards], slots=1)
    p0, p1 = assign(units, 1, 1, 0)[0], assign(units, 1, 1, 1)[0]
    assert sorted(p0, key=str) == sorted(p1, key=str) and p0 != p1
    assert sum(u.stop - u.start for u in p0) == sum(s.num_rows for s in shards)


def test_scan_errors_name_the_file_and_the_fix(tmp_path):
    with pytest.raises(CorpusError, match="no such file or directory"):
        scan_shards(str(tmp_path / "missing"))
    with pytest.raises(CorpusError, match="no Parquet files found"):
        scan_shards(str(tmp_path / "*.parquet"))
    pq.write_table(pa.table({"body": ["x"]}), tmp_path / "a.parquet")
    with pytest.raises(CorpusError, match=r"a.parquet: no column 'text' \(columns: body\); pass --text-column"):
        scan_shards(str(tmp_path))
    pq.write_table(pa.table({"text": [1, 2]}), tmp_path / "a.parquet")
    with pytest.raises(CorpusError, match="has type int64, expected string or list<string>"):
        scan_shards(str(tmp_path))
    pq.write_table(pa.table({"text": pa.array([], pa.string())}), tmp_path / "a.parquet")
    with pytest.raises(CorpusError, match="the corpus is empty"):
        scan_shards(str(tmp_path))
    (tmp_path / "a.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(CorpusError, match="not a readable Parquet file"):
        scan_shards(str(tmp_path))


def test_a_shard_that_is_not_the_listed_file_is_bad_data_never_trained_on(corpus, tmp_path):
    """A shard rewritten after it was listed (the same rows, other words), or another node's copy
    of it at the same path: its Parquet footer is not the listed one. Guards: reading it, as the
    reader did, which trains on other data than the vocabulary and the plan were made from."""
    from w2v_dist.corpus.dataset import BadData

    shards, vocab_dir = corpus
    victim = shards[1].uri
    n = pq.ParquetFile(victim).metadata.num_rows
    pq.write_table(pa.table({"text": [f"x{i} other words entirely" for i in range(n)]}), victim, row_group_size=400)
    with pytest.raises(BadData, match=r"part-00001.parquet: not the file the corpus was listed with \(its Parquet "
                                      r"footer differs: rewritten since, or another node's copy\)"):
        list(_stream(shards, vocab_dir))
    stream = _stream(shards, vocab_dir, on_bad="skip")
    vocab = Vocab.load(vocab_dir)
    words = {vocab.words[int(i)].as_py() for c in stream for i in c.tokens.ids}
    assert "x1" not in words and "w1" in words  # the other shards' rows, none of the changed file's
    listed = {f"w{i}" for i in range(1000, 2000)}  # the rows the listed part-00001 held: skipped
    assert not listed & words and {f"w{i}" for i in range(1000)} <= words
