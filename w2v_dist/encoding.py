"""``w2v-dist encode``: a corpus tokenized once, stored as token ids, for any number of runs.

``train`` on text reads every row group twice before its first step (counting, then the first
epoch) and tokenizes it both times with regular expressions; only later epochs come from the
node-local token cache. ``encode`` does the counting and the tokenizing once and writes:

=========================  ==================================================================
``part-NNNNN.parquet``     one per input file, row group for row group and row for row: a
                           ``list<int32>`` column ``ids``, each row's in-vocabulary tokens as
                           vocabulary ids (frequency order: 0 is the most frequent word)
``vocab/``                 the vocabulary those ids index (:mod:`w2v_dist.vocab`'s files)
``encoded.json``           the manifest, written last: the tokenizer, ``--min-count``, the
                           vocabulary's fingerprint, every file's rows and tokens per row group
=========================  ==================================================================

``train`` on such a directory skips the vocabulary pass (the counts are in ``vocab/``) and reads
the ids without copying (Arrow's list values are the int32 array the kernel takes). A run may ask
for a smaller vocabulary than the one encoded (a higher ``--min-count``, a ``--max-vocab``): the
vocabulary is sorted by frequency, so it is a prefix of the encoded one and its ids are the same;
the others are dropped as out-of-vocabulary words are. The rows, row groups and files match the
input's one for one, so a run on the encoded corpus trains on exactly the examples, in exactly
the order, of the same run on the text: the same vectors, bit for bit.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import time
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from w2v_dist import storage
from w2v_dist.config import ConfigError, TokenizerConfig, check_types
from w2v_dist.corpus.tokenize import ID_COLUMN, VERSION, token_ids

log = logging.getLogger("w2v_dist.encode")  # the command's name

MANIFEST = "encoded.json"
COLUMN = ID_COLUMN
FORMAT = "w2v_dist-encoded"
SCHEMA = pa.schema([pa.field(COLUMN, pa.list_(pa.int32()))])
# the tokenizer settings applied when encoding (max_sentence_length is applied by train, to the ids)
TOKENIZER_FIELDS = ("lowercase", "split_pattern", "normalize")


def _absolute(uri: str) -> str:
    """A local path made absolute (``data/`` and ``./data`` are one place); a URI as it is."""
    return os.path.abspath(storage.local_path(uri)) if storage.is_local(uri) else uri


@dataclass
class EncodeConfig:
    corpus: str
    output: str
    text_column: str = "text"
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    min_count: int = 5
    max_vocab: int | None = None
    max_vocab_size: int | None = None
    storage_options: dict = field(default_factory=dict)
    output_storage_options: dict | None = None
    on_bad_shard: str = "error"
    overwrite: bool = False
    sample: float = 1e-3  # only for the stored keep-probabilities; train recomputes them with its own --sample

    def __post_init__(self):
        check_types(self)
        if self.min_count < 1:
            raise ConfigError(f"--min-count must be >= 1, got {self.min_count}")
        if self.max_vocab is not None and self.max_vocab < 1:
            raise ConfigError(f"--max-vocab must be >= 1, got {self.max_vocab}")
        if self.max_vocab_size is not None and self.max_vocab_size < 1:
            raise ConfigError(f"--max-vocab-size must be >= 1, got {self.max_vocab_size}")
        corpus, output = (_absolute(u).rstrip("/") for u in (self.corpus, self.output))
        if corpus == output:
            raise ConfigError(f"--output {self.output}: is the corpus itself; choose another directory")
        if output.startswith(corpus + "/"):
            raise ConfigError(f"--output {self.output}: is inside the corpus {self.corpus}, and every Parquet file "
                              "under a corpus is read as its text: choose a directory outside it")

    @property
    def output_options(self) -> dict:
        return self.storage_options if self.output_storage_options is None else self.output_storage_options


def read_manifest(uri: str, storage_options: dict | None = None) -> dict | None:
    """The manifest of an encoded corpus at ``uri``, or ``None`` if ``uri`` is not one (or cannot be
    looked at: the scan of the shards that follows names the corpus in its own error)."""
    path = storage.join(uri, MANIFEST)
    try:
        if not storage.exists(path, storage_options):
            return None
    except storage.StorageError:
        return None
    manifest = json.loads(storage.read_bytes(path, storage_options))
    if manifest.get("format") != FORMAT or manifest.get("tokenize_version") != VERSION:
        raise ConfigError(f"{uri}: encoded by another version of w2v-dist (tokenizer rules {manifest.get('tokenize_version')}, "
                          f"now {VERSION}); run `w2v-dist encode` again")
    return manifest


def encode_corpus(cfg: EncodeConfig) -> dict:
    """Count, then write the ids; returns the manifest.

    Under torchrun the ranks count their shares of the row groups as ``train``'s vocabulary pass
    does, each writes the files dealt to it (whole files, balanced by tokens), and rank 0 writes the
    vocabulary and, last, the manifest: the same files, byte for byte, as one process writes."""
    from w2v_dist.distributed import setup

    with setup() as dist:
        return _encode(cfg, dist)


def _encode(cfg: EncodeConfig, dist) -> dict:
    from w2v_dist.corpus.shards import CorpusError, scan_shards
    from w2v_dist.training import build_vocab

    so, out_so = cfg.storage_options, cfg.output_options
    t0 = time.perf_counter()

    def scan():  # one rank looks at the output and reads the footers; the others are told
        _check_output(cfg.output, cfg.overwrite, out_so)
        report: dict = {}
        return scan_shards(cfg.corpus, cfg.text_column, so, cfg.on_bad_shard, report), report

    shards, report = dist.on_main(scan, (CorpusError, ConfigError, storage.StorageError))
    vocab, row_tokens, skipped = build_vocab(cfg, shards, dist)
    log.info("counted %d tokens in %d file(s): %d words occur --min-count=%d times or more (%.1f s)",
             vocab.meta["raw_tokens"], len(shards), len(vocab), cfg.min_count, time.perf_counter() - t0)
    if dist.is_main:
        for name in (MANIFEST, "vocab"):  # the manifest first: from here on the directory reads as unfinished
            storage.remove(storage.join(cfg.output, name), out_so, recursive=True)
        for old in storage.expand(cfg.output, (".parquet",), out_so) if storage.exists(cfg.output, out_so) else ():
            if posixpath.basename(old).startswith("part-"):
                storage.remove(old, out_so)
        storage.makedirs(cfg.output, out_so)
    dist.barrier()

    t1, mine = time.perf_counter(), deal_files(row_tokens, dist.world_size)[dist.rank]
    files = list(zip(mine, _write_ids(cfg, shards, mine, vocab)))
    if dist.world_size > 1:
        files = [f for part in dist.all_gather_object(files) for f in part]
    files = [f for _, f in sorted(files, key=lambda x: x[0])]
    manifest = {
        "format": FORMAT, "tokenize_version": VERSION, "source": cfg.corpus, "column": COLUMN,
        "tokenizer": {k: getattr(cfg.tokenizer, k) for k in TOKENIZER_FIELDS},
        "min_count": cfg.min_count, "max_vocab": cfg.max_vocab, "max_vocab_size": cfg.max_vocab_size,
        "vocab_size": len(vocab), "vocab_fingerprint": vocab.meta["fingerprint"],
        "raw_tokens": vocab.meta["raw_tokens"], "total_words": vocab.total_words,
        "skipped": {**skipped, "bad_files": len(report.get("bad_files", []))}, "files": files,
    }
    if dist.is_main:
        vocab.save(storage.join(cfg.output, "vocab"), out_so)
        storage.write_text(storage.join(cfg.output, MANIFEST), json.dumps(manifest, indent=1), out_so)  # last
        log.info("encoded %s into %s: %d file(s), %d ids (%.1f s writing, %.1f s in all)", cfg.corpus, cfg.output,
                 len(files), vocab.total_words, time.perf_counter() - t1, time.perf_counter() - t0)
    dist.barrier()  # no rank reports success before the manifest is there
    return manifest


def deal_files(row_tokens: list[list[tuple[int, int]]], ranks: int) -> list[list[int]]:
    """The files each rank encodes: whole files (each is one output file), dealt by tokens as the
    data plan deals its units; every rank computes the same deal."""
    from w2v_dist.corpus.plan import deal

    owner = deal([sum(t for _, t in groups) for groups in row_tokens], np.zeros(ranks, dtype=np.int64))
    return [[s for s in range(len(row_tokens)) if owner[s] == r] for r in range(ranks)]


def _write_ids(cfg: EncodeConfig, shards, mine: list[int], vocab) -> list[dict]:
    """Write ``part-NNNNN.parquet`` for each of the files ``mine`` (indices into ``shards``);
    returns their manifest entries."""
    from w2v_dist.corpus.dataset import token_stream
    from w2v_dist.corpus.shards import footer_hash, open_parquet

    so, out_so = cfg.storage_options, cfg.output_options
    files, last = [], time.perf_counter()
    stream = token_stream([shards[s] for s in mine], cfg.tokenizer, storage_options=so, on_bad=cfg.on_bad_shard,
                          prepare=lambda column: _ids_per_row(column, vocab.words, cfg.tokenizer))
    pending = next(stream, None)
    for i, s in enumerate(mine):
        name = f"part-{s:05d}.parquet"
        row_tokens = []
        with storage.atomic_open(storage.join(cfg.output, name), "wb", out_so) as f, \
                pq.ParquetWriter(f, SCHEMA, compression="zstd", write_page_checksum=True) as writer:
            while pending is not None and pending[0] == i:
                _, g, encoded = pending
                lists, tokens = encoded if encoded is not None else ([], 0)
                if len(lists):  # none: a row group skipped as unreadable (--on-bad-shard skip), or all its rows
                    writer.write_table(pa.Table.from_arrays([lists], schema=SCHEMA), row_group_size=max(len(lists), 1))
                    row_tokens.append([len(lists), tokens])
                pending = next(stream, None)
        written = open_parquet(storage.join(cfg.output, name), out_so).metadata
        files.append({"name": name, "source": shards[s].uri, "rows": sum(r for r, _ in row_tokens),
                      "footer": footer_hash(written), "row_tokens": row_tokens})
        if time.perf_counter() - last > 10:
            last = time.perf_counter()
            log.info("encoded %d of %d file(s)%s", i + 1, len(mine), " (this rank's)" if len(mine) < len(shards) else "")
    return files


def _check_output(output: str, overwrite: bool, storage_options: dict | None) -> None:
    if not storage.exists(output, storage_options):
        return
    fs, path = storage.url_to_fs(output, storage_options)
    if fs.isfile(path):
        if overwrite:
            return
        raise ConfigError(f"--output {output}: is a file; it must be a directory")
    names = {posixpath.basename(p.rstrip("/")) for p in fs.ls(path, detail=False)}
    if "config.json" in names:  # --overwrite or not: its vocab/ would become the corpus's, under its vectors
        raise ConfigError(f"--output {output}: holds a training run (config.json), not an encoded corpus; choose "
                          "another directory")
    if overwrite:
        return
    if MANIFEST in names or any(n.endswith(".parquet") for n in names):
        raise ConfigError(f"--output {output}: already holds an encoded corpus or Parquet files; pass --overwrite to "
                          "replace them or choose another directory")


def _ids_per_row(column: pa.ChunkedArray, vocab_words: pa.Array, tokenizer: TokenizerConfig) -> tuple[pa.Array, int]:
    """Every row's in-vocabulary tokens as ids (a list per row, empty for a row with none), and the
    row group's token count (all tokens, as the vocabulary pass counts them)."""
    values, rows, tokens = token_ids(column, vocab_words, tokenizer)
    offsets = np.zeros(len(column) + 1, np.int32)
    np.cumsum(np.bincount(rows, minlength=len(column)), out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values, pa.int32())), tokens


def encoded_vocab(cfg, manifest: dict, shards) -> tuple:
    """``train`` on an encoded corpus: the run's vocabulary (a prefix of the encoded one), the data
    plan's ``(rows, tokens)`` per row group, and what encoding skipped; the flags checked against
    what the corpus was encoded with, each mismatch one line naming the flag."""
    from w2v_dist.corpus.shards import CorpusError
    from w2v_dist.vocab import Vocab

    where = cfg.corpus
    if cfg.text_column not in ("text", COLUMN):  # the default means "as encoded", as the tokenizer's flags do
        raise ConfigError(f"{where}: is encoded: its ids are the {COLUMN!r} column, made from the text column chosen "
                          f"when encoding; --text-column {cfg.text_column} cannot change that: drop it, or encode again")
    m = manifest["min_count"]
    if cfg.min_count < m:
        raise ConfigError(f"{where}: was encoded with --min-count {m}, so rarer words are not in it; train with "
                          f"--min-count {m} or more, or encode again with a lower one")
    if manifest["max_vocab"] is not None and (cfg.max_vocab is None or cfg.max_vocab > manifest["max_vocab"]):
        raise ConfigError(f"{where}: was encoded with --max-vocab {manifest['max_vocab']}; train with --max-vocab "
                          f"{manifest['max_vocab']} or less, or encode again without it")
    if cfg.max_vocab_size is not None and cfg.max_vocab_size != manifest["max_vocab_size"]:
        raise ConfigError(f"{where}: is encoded (counted with --max-vocab-size {manifest['max_vocab_size']}); "
                          "--max-vocab-size applies when counting: drop it, or pass it to `w2v-dist encode`")
    vocab = Vocab.load(storage.join(where, "vocab"), cfg.storage_options, cfg.cache_dir)
    if vocab.meta["fingerprint"] != manifest["vocab_fingerprint"]:
        raise CorpusError(f"{where}: vocab/ is not the vocabulary the ids were encoded with; run `w2v-dist encode` again")
    table = pa.table({"word": vocab.words, "count": pa.array(np.asarray(vocab.counts))})
    run_vocab = Vocab.build(table, cfg.min_count, cfg.max_vocab, cfg.sample, raw_tokens=manifest["raw_tokens"],
                            source=where)
    files = {f["name"]: f for f in manifest["files"]}
    row_tokens = []
    for shard in shards:
        f = files.get(posixpath.basename(shard.uri))
        if f is None or f.get("footer") != shard.footer or [r for r, _ in f["row_tokens"]] != list(shard.row_groups):
            raise CorpusError(f"{shard.uri}: is not the file `w2v-dist encode` wrote (added or rewritten since); "
                              "run encode again")
        row_tokens.append([tuple(x) for x in f["row_tokens"]])
    if len(shards) != len(files):
        raise CorpusError(f"{where}: {len(files) - len(shards)} of the files `w2v-dist encode` wrote are missing; "
                          "restore them or run encode again")
    return run_vocab, row_tokens, dict(manifest.get("skipped", {}))


def check_tokenizer(cfg_tokenizer: TokenizerConfig, manifest: dict, where: str) -> None:
    """A run on an encoded corpus tokenizes nothing: flags left at their defaults mean "as
    encoded"; a flag set to something else than the encoding's is an error (the tokens cannot
    change now). ``--max-sentence-length`` is the run's: it applies to the ids."""
    encoded = manifest["tokenizer"]
    default = TokenizerConfig()
    for k in TOKENIZER_FIELDS:
        mine = getattr(cfg_tokenizer, k)
        if mine != getattr(default, k) and mine != encoded[k]:
            flag = "--no-lowercase" if k == "lowercase" else f"--{k.replace('_', '-')} {mine}"
            raise ConfigError(f"{where}: was encoded with {k}={encoded[k]!r}; {flag} cannot change its tokens now: "
                              "drop the flag, or encode again with it")
