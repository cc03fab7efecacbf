"""The shard manifest: every Parquet file of the corpus with its row groups, read from the
footers once, up front (cheap: many at once, and on one rank, which hands the manifest to the
others), so a bad file or column fails before training starts.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import posixpath
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from w2v_dist import storage
from w2v_dist.corpus.tokenize import ID_COLUMN, as_text, is_id_list_type, is_readable_text_type

PARQUET_SUFFIXES = (".parquet", ".parq", ".pq")  # what a corpus's Parquet files are named (prepare reads them so too)

log = logging.getLogger(__name__)


SKIP_IT = "; pass --on-bad-shard skip to leave it out"  # the fix an error names; not said when skipping


class CorpusError(ValueError):
    """A corpus that cannot be read; the message names the file and the fix."""


@dataclass(frozen=True)
class Shard:
    uri: str
    num_rows: int
    row_groups: tuple[int, ...]  # rows in each row group
    column: str
    footer: str = ""  # a hash of the footer (sizes, statistics): a rewritten file gets another (corpus/cache.py)
    size: int = 0  # bytes, when the store told us while listing (0: unknown); saves a HEAD per open

    def to_dict(self) -> dict:
        return asdict(self)


def open_parquet(uri: str, storage_options: dict | None = None, metadata=None, size: int = 0) -> pq.ParquetFile:
    """Open for range reads: no whole-file readahead (``cache_type='none'``); pyarrow's
    ``pre_buffer`` plans the byte ranges of the columns it needs. ``metadata`` (the footer, read
    before) saves reading it again; ``size`` saves s3fs the HEAD it sends to learn the size."""
    return _parquet(_open(uri, storage_options, size), uri, metadata)


def _open(uri: str, storage_options: dict | None, size: int = 0):
    fs, path = storage.url_to_fs(uri, storage_options)
    with storage.answering(uri):  # a store that does not answer is not a bad file
        if isinstance(fs, _local_fs()):
            return fs.open(path, "rb")
        known = {"size": size} if size and "size" in inspect.signature(fs._open).parameters else {}
        return fs.open(path, "rb", cache_type="none", **known)


def _parquet(f, uri: str, metadata=None) -> pq.ParquetFile:
    with storage.answering(uri):
        # pages written with CRCs (`w2v-dist prepare` writes them) are verified: a flipped byte is an error, not noise
        return pq.ParquetFile(f, metadata=metadata, pre_buffer=True, page_checksum_verification=True)


def _local_fs():
    from fsspec.implementations.local import LocalFileSystem
    return LocalFileSystem


def scan_shards(uri: str, column: str = "text", storage_options: dict | None = None,
                on_bad: str = "error", report: dict | None = None, allow_incomplete: bool = False,
                ids: bool = False) -> list[Shard]:
    """List the Parquet files under ``uri`` (a directory/prefix, a file, or a glob) and check
    every footer. A file that is not Parquet, is truncated, or lacks a usable text column is an
    error, or with ``on_bad="skip"`` is left out and counted in ``report["bad_files"]``. A
    directory that ``w2v-dist prepare`` did not finish is an error unless ``allow_incomplete``
    (:func:`check_prepared`). ``ids``: an encoded corpus, whose ``column`` is ``list<int32>``."""
    report = {} if report is None else report
    try:
        files = storage.expand(uri, PARQUET_SUFFIXES, storage_options)
    except storage.StorageError as e:
        raise CorpusError(str(e)) from None
    except (FileNotFoundError, OSError) as e:
        raise CorpusError(f"{uri}: cannot list it ({e})") from None
    check_prepared(uri, files, storage_options, allow_incomplete)
    if not files:
        raise CorpusError(f"{uri}: no Parquet files found (expected *.parquet; make shards with `w2v-dist prepare`)")
    shards = []
    for found in _check_all(files, column, storage_options, ids):
        if isinstance(found, Shard):
            shards.append(found)
            continue
        if on_bad == "error":
            raise found
        log.warning("skipping %s (--on-bad-shard skip)", str(found).removesuffix(SKIP_IT))
        report.setdefault("bad_files", []).append(str(found))
    report["empty_files"] = sum(1 for s in shards if s.num_rows == 0)
    report["empty_row_groups"] = sum(1 for s in shards for n in s.row_groups if n == 0)
    if sum(s.num_rows for s in shards) == 0:
        raise CorpusError(f"{uri}: the corpus is empty ({len(shards)} Parquet file(s), 0 rows)")
    return shards


def check_prepared(uri: str, files: list[str], storage_options: dict | None = None,
                   allow_incomplete: bool = False) -> None:
    """A directory ``w2v-dist prepare`` wrote is used only once it committed (``_SUCCESS``, its
    manifest, written last; w2v_dist/prepare.py), and only whole: every shard the manifest lists
    is there with its rows. Directories with no trace of ``prepare`` (Parquet from other tools)
    are taken as they are."""
    fs, path = storage.url_to_fs(uri, storage_options)
    if not fs.isdir(path):
        return  # a file or a glob: the user named the files
    success, preparing = storage.join(uri, "_SUCCESS"), storage.join(uri, "_PREPARING")
    if storage.exists(success, storage_options):
        try:
            listed = json.loads(storage.read_bytes(success, storage_options)).get("shards")
        except (ValueError, AttributeError):
            listed = None  # an empty _SUCCESS (Spark, Hadoop): nothing to check against
        names = {posixpath.basename(f) for f in files}
        missing = [s["name"] for s in listed or () if s["name"] not in names]
        if missing:
            raise CorpusError(f"{uri}: {len(missing)} shard(s) listed in _SUCCESS are missing ({', '.join(missing[:3])}"
                              f"{', ...' if len(missing) > 3 else ''}); restore them or re-run `w2v-dist prepare`")
        return
    if storage.exists(preparing, storage_options):
        if allow_incomplete:
            log.warning("%s: `w2v-dist prepare` did not finish here (no _SUCCESS); training on the %d shard(s) "
                        "it wrote (--allow-incomplete)", uri, len(files))
            return
        raise CorpusError(f"{uri}: `w2v-dist prepare` did not finish here (_PREPARING but no _SUCCESS: it failed or "
                          f"was interrupted after {len(files)} shard(s)); re-run prepare with --overwrite, or pass "
                          "--allow-incomplete to train on what it wrote")


# Footers read at once: an object store answers each in a round trip (~10-100 ms), so 10,000
# shards read one after another take minutes; s3fs/gcsfs/adlfs run the requests on one event loop.
SCAN_CONCURRENCY = 32


def _check_all(files: list[str], column: str, storage_options: dict | None, ids: bool = False) -> list[Shard | CorpusError]:
    """:func:`_check` of every file, ``SCAN_CONCURRENCY`` at a time, in order; a file's
    :class:`CorpusError` is returned in its place, anything else (a store that stopped
    answering) raised."""
    def check(f: str) -> Shard | CorpusError:
        try:
            return _check(f, column, storage_options, ids)
        except CorpusError as e:
            return e

    if len(files) == 1:
        return [check(files[0])]
    with ThreadPoolExecutor(min(SCAN_CONCURRENCY, len(files)), thread_name_prefix="w2v_dist-footers") as pool:
        return list(pool.map(check, files))


def _check(f: str, column: str, storage_options: dict | None, ids: bool = False) -> Shard:
    try:
        source = _open(f, storage_options)
        pf = _parquet(source, f)
        schema = pf.schema_arrow
        md = pf.metadata
    except (pa.ArrowInvalid, OSError) as e:
        raise CorpusError(f"{f}: not a readable Parquet file ({e}){SKIP_IT}") from None
    if column not in schema.names:
        if ids:
            raise CorpusError(f"{f}: has no column {column!r}: not a file `w2v-dist encode` wrote (added or replaced "
                              "since); remove it or run encode again")
        if ID_COLUMN in schema.names and is_id_list_type(schema.field(ID_COLUMN).type):
            here = posixpath.dirname(f)
            if storage.exists(storage.join(here, "encoded.json"), storage_options):  # nested in a text corpus
                raise CorpusError(f"{f}: belongs to the encoded corpus in {here}, which lies inside the corpus "
                                  "being read (every Parquet file under it is); train on that directory itself, "
                                  "or move it out")
            raise CorpusError(f"{f}: holds token ids but its directory has no encoded.json: an unfinished "
                              "`w2v-dist encode`; run it again")
        raise CorpusError(
            f"{f}: no column {column!r} (columns: {', '.join(schema.names)}); pass --text-column NAME")
    t = schema.field(column).type
    if ids and not is_id_list_type(t):
        raise CorpusError(f"{f}: column {column!r} has type {t}, not the list<int32> of token ids `w2v-dist encode` "
                          "writes; run encode again")
    if not ids and not is_readable_text_type(t):
        raise CorpusError(
            f"{f}: column {column!r} has type {t}, expected string or list<string>; pass --text-column NAME")
    return Shard(f, md.num_rows, tuple(md.row_group(i).num_rows for i in range(md.num_row_groups)), column,
                 footer_hash(md), int(getattr(source, "size", 0) or 0))


def footer_hash(md) -> str:
    """Sizes and offsets of every column chunk: they change when the data does. (Not the min/max
    statistics: they may not decode, and then the bad rows are found later, by the reader.)"""
    h = hashlib.sha256()
    for i in range(md.num_row_groups):
        rg = md.row_group(i)
        h.update(repr((rg.num_rows, rg.total_byte_size)).encode())
        for j in range(rg.num_columns):
            c = rg.column(j)
            h.update(repr((c.file_offset, c.total_compressed_size, c.total_uncompressed_size, c.num_values)).encode())
    return h.hexdigest()[:16]


def read_row_group(pf: pq.ParquetFile, shard: Shard, index: int) -> pa.ChunkedArray:
    return as_text(pf.read_row_group(index, columns=[shard.column])[shard.column])
