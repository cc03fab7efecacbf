"""``w2v-dist prepare``: raw corpora -> Parquet shards with one string column ``text``.

Inputs are files, directories or globs (any fsspec URI), read by name:

- ``*.parquet`` (``*.parq``, ``*.pq``, as ``train`` lists them): the ``text_field`` column, string
  or list<string> (joined with spaces);
- ``*.jsonl`` / ``*.ndjson`` / ``*.json``: JSON Lines, one object per line, field ``text_field``;
- anything else: plain text, one sentence or document per line.

Text and JSON may be compressed (``.gz``, ``.bz2``, ``.zst``, ``.xz``: picked from the suffix).
Everything streams in bounded batches, so memory does not grow with the input. Records with no
text (blank lines, a missing, null or blank field) are skipped and counted. The output
directory gets ``part-00000.parquet``, ``part-00001.parquet``, ... (zstd, schema ``text:
string``), each written through :func:`w2v_dist.storage.atomic_open`, so a shard is visible only
once complete.

The output is committed as a whole: ``_PREPARING`` is written before the first shard, and
``_SUCCESS`` (a JSON manifest: every shard with its rows, and the summary) after the last; then
``_PREPARING`` goes. A prepare that failed, was interrupted or killed leaves ``_PREPARING`` and no
``_SUCCESS``, and ``train`` refuses such a directory (:func:`w2v_dist.corpus.shards.check_prepared`)
rather than train on part of the corpus without a word. (No renames: on object stores a rename is
a copy of every byte.)

A compressed input that is truncated or corrupt (a zstd frame cut short included) is an error
naming the file and the line reached, or with ``on_bad_input="skip"`` its lines read before the
damage are kept, the rest is left out and the file is counted in ``bad_inputs``. So is input that
is not what its name says, or not UTF-8 text: an unreadable Parquet file, a text or JSON file
that is Parquet (``PAR1``), starts with a UTF-16/UTF-32 byte-order mark or whose bytes are more
than 1% NUL (UTF-16 without a mark), and a JSON Lines file none of whose records has a value in
``text_field``. A file in which more than ``max_invalid_utf8`` of the bytes are not UTF-8 is not
text (binary, or another encoding): an error, not a vocabulary of U+FFFD fragments.

Example::

    >>> import os, tempfile
    >>> from w2v_dist.prepare import prepare
    >>> d = tempfile.mkdtemp()
    >>> with open(os.path.join(d, "a.txt"), "w") as f:
    ...     _ = f.write("the quick brown fox\\n\\njumps over the lazy dog\\n")
    >>> s = prepare([os.path.join(d, "a.txt")], os.path.join(d, "out"), progress=False)
    >>> s["rows"], s["skipped_rows"], [os.path.basename(u) for u in s["shards"]]
    (2, 1, ['part-00000.parquet'])
    >>> sorted(os.listdir(os.path.join(d, "out")))
    ['_SUCCESS', 'part-00000.parquet']
"""

from __future__ import annotations

import codecs
import contextlib
import gzip
import json
import logging
import os
import posixpath
import socket
import sys
import time
from typing import IO, Iterator

import fsspec.compression
import fsspec.utils
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson
import pyarrow.parquet as pq

from w2v_dist import storage
from w2v_dist.corpus.shards import PARQUET_SUFFIXES
from w2v_dist.faults import maybe_fail

logger = logging.getLogger(__name__)

SCHEMA = pa.schema([("text", pa.string())])
JSON_SUFFIXES = (".jsonl", ".ndjson", ".json")
# PARQUET_SUFFIXES: what `train` lists as Parquet; a corpus.pq that train takes is not text here
PARQUET_MAGIC = b"PAR1"  # the first (and last) 4 bytes of every Parquet file
# Text holds no NUL bytes; UTF-16 has one in every character below U+0100 (UTF-32, two or three),
# which UTF-8 decoding takes as valid characters, so the invalid-UTF-8 share never sees them.
MAX_NUL_SHARE = 0.01
BOMS = ((codecs.BOM_UTF32_LE, "UTF-32"), (codecs.BOM_UTF32_BE, "UTF-32"),  # before UTF-16's: FF FE 00 00
        (codecs.BOM_UTF16_LE, "UTF-16"), (codecs.BOM_UTF16_BE, "UTF-16"))
# Bytes read per batch from a text/JSON stream (cut at the last newline), and rows per batch read
# from Parquet: large enough for vectorised Arrow work, small enough to keep memory flat.
BLOCK_BYTES = 8 << 20
PARQUET_BATCH_ROWS = 65_536
# Compressed bytes fed to zstd at a time: zstd expands up to ~32,000x (runs of one byte), so this
# bounds one step's output (256 MiB at worst, ~30 KiB for text) at no measurable cost in speed.
ZSTD_READ_BYTES = 8 << 10
# The commit protocol's two files (see the module docstring); names starting with "_" are skipped
# by pyarrow.dataset, Spark and `prepare` itself when they list a directory.
SUCCESS = "_SUCCESS"
PREPARING = "_PREPARING"
ON_BAD_INPUT = ("error", "skip")


class PrepareError(ValueError):
    """Input or output that cannot work; the message names the path and the fix."""


def prepare(inputs: list[str], output: str, *, rows_per_shard: int = 1_000_000,
            rows_per_row_group: int = 100_000, text_field: str = "text",
            storage_options: dict | None = None, output_storage_options: dict | None = None,
            overwrite: bool = False, progress: bool = True, on_bad_input: str = "error",
            max_invalid_utf8: float = 0.1) -> dict:
    """Convert ``inputs`` into Parquet shards under ``output``; return a JSON-able summary.

    ``storage_options`` are the inputs' fsspec options, and the output's too unless
    ``output_storage_options`` is given (the output on another store).

    The summary holds ``output``, ``shards`` (URIs, in order), ``rows``, ``input_files``,
    ``bytes_in`` (stored, i.e. compressed, size), ``skipped_rows`` (records without text),
    ``replaced_utf8`` (lines or records whose invalid UTF-8 was replaced with U+FFFD),
    ``invalid_utf8_bytes`` and ``bad_inputs`` (files damaged or not text, left out or cut short:
    ``on_bad_input="skip"``).
    """
    if rows_per_shard < 1:
        raise PrepareError(f"--rows-per-shard must be >= 1, got {rows_per_shard}")
    if rows_per_row_group < 1:
        raise PrepareError(f"--rows-per-row-group must be >= 1, got {rows_per_row_group}")
    if not text_field:
        raise PrepareError("--text-field must not be empty (default: text)")
    if on_bad_input not in ON_BAD_INPUT:
        raise PrepareError(f"--on-bad-input must be error or skip, got {on_bad_input!r}")
    if not 0 <= max_invalid_utf8 <= 1:  # NaN fails this too
        raise PrepareError(f"--max-invalid-utf8 must be a fraction in [0, 1], got {max_invalid_utf8}")
    if isinstance(inputs, str):  # a lone URI would otherwise be iterated character by character
        inputs = [inputs]
    if not inputs:
        raise PrepareError("no inputs given; pass one or more files, directories or globs")
    rows_per_row_group = min(rows_per_row_group, rows_per_shard)

    out_options = storage_options if output_storage_options is None else output_storage_options
    files = _not_under(output, list_inputs(inputs, storage_options), storage_options, out_options)
    sizes = [_size(uri, storage_options) for uri in files]  # fails fast on unreadable inputs
    _prepare_output(output, overwrite, out_options, inputs)

    stats = {"skipped_rows": 0, "replaced_utf8": 0, "invalid_utf8_bytes": 0, "bad_inputs": 0}
    bar = _Progress(progress, total_bytes=sum(sizes), n_files=len(files))
    with _ShardWriter(output, rows_per_shard, rows_per_row_group, out_options) as writer:
        for i, (uri, size) in enumerate(zip(files, sizes)):
            rows_before = writer.rows
            for column in read_text(uri, text_field, storage_options, stats, bar.advance_to,
                                    on_bad_input, max_invalid_utf8):
                writer.add(column)
            bar.file_done(uri, i, size, writer.rows - rows_before, writer.rows)
    bar.close()

    if writer.rows == 0:
        storage.remove(storage.join(output, PREPARING), out_options)  # nothing was written
        raise PrepareError(f"{', '.join(inputs)}: no text found in {len(files)} file(s) "
                           f"({stats['skipped_rows']} records without text); check the inputs "
                           f"and --text-field (now {text_field!r})")
    summary = {"output": output, "shards": writer.shards, "rows": writer.rows,
               "input_files": len(files), "bytes_in": sum(sizes), **stats}
    _commit(output, summary, writer.shard_rows, out_options)
    logger.info("prepare: wrote %d rows in %d shard(s) to %s from %d file(s) (%d skipped, %d with "
                "invalid UTF-8 replaced, %d bad input(s) left out or cut short)", writer.rows,
                len(writer.shards), output, len(files), stats["skipped_rows"], stats["replaced_utf8"],
                stats["bad_inputs"])
    return summary


# --------------------------------------------------------------------------------------------
# Inputs


def list_inputs(inputs: list[str], storage_options: dict | None = None) -> list[str]:
    """Every file the input URIs name, in order, each once.

    Directories and globs skip names starting with ``.`` or ``_`` (``_SUCCESS``, ``.crc``,
    half-written temp files), as Spark and ``pyarrow.dataset`` do; a file named outright is kept.
    """
    files: list[str] = []
    for uri in inputs:
        try:
            found = storage.expand(uri, ("",), storage_options)  # "" : every suffix
        except storage.StorageError as e:
            raise PrepareError(str(e)) from None
        fs, path = storage.url_to_fs(uri, storage_options)
        if len(found) != 1 or not fs.isfile(path):
            found = [f for f in found if not posixpath.basename(f).startswith((".", "_"))]
        if not found:
            raise PrepareError(f"{uri}: matches no files (check the glob or directory; "
                               "quote globs so the shell leaves them alone)")
        files.extend(found)
    return list(dict.fromkeys(files))  # a file reached by two inputs is read once


def _not_under(output: str, files: list[str], storage_options: dict | None,
               output_storage_options: dict | None) -> list[str]:
    """``files`` without those inside ``output``: ``prepare data/ data/shards`` run twice must
    not read its own earlier shards (nor lose them to ``--overwrite`` half-way through)."""
    out_fs, out_path = storage.url_to_fs(output, output_storage_options)
    prefix = out_path.rstrip("/") + "/"
    kept = []
    for uri in files:
        fs, path = storage.url_to_fs(uri, storage_options)
        if type(fs) is type(out_fs) and path.startswith(prefix):
            logger.warning("prepare: not reading %s: it is inside the output %s", uri, output)
        else:
            kept.append(uri)
    if files and not kept:
        raise PrepareError(f"{output}: every input file lies inside the output directory; "
                           "choose an --output outside the inputs")
    return kept


def _size(uri: str, storage_options: dict | None) -> int:
    fs, path = storage.url_to_fs(uri, storage_options)
    return int(fs.size(path) or 0)


def _format(uri: str) -> tuple[str, str | None]:
    """``("parquet" | "json" | "text", compression)`` from the file name."""
    name = posixpath.basename(uri.split("?", 1)[0]).lower()
    compression = fsspec.utils.infer_compression(name)
    if compression is not None:
        name = posixpath.splitext(name)[0]
    if name.endswith(PARQUET_SUFFIXES):
        if compression is not None:
            raise PrepareError(f"{uri}: a compressed Parquet file cannot be read in a stream; "
                               "decompress it (Parquet compresses its pages itself)")
        return "parquet", None
    if name.endswith(JSON_SUFFIXES):
        return "json", compression
    return "text", compression


def read_text(uri: str, text_field: str, storage_options: dict | None, stats: dict,
              on_bytes=lambda n: None, on_bad_input: str = "error",
              max_invalid_utf8: float = 1.0) -> Iterator[pa.Array]:
    """Batches of non-blank text (``pa.string()`` arrays) from one file, in file order.

    ``stats["skipped_rows"]``, ``stats["replaced_utf8"]``, ``stats["invalid_utf8_bytes"]`` and
    ``stats["bad_inputs"]`` are incremented; ``on_bytes(n)`` is told how many stored bytes of the
    file have been read so far.
    """
    kind, compression = _format(uri)
    with contextlib.ExitStack() as stack:
        raw = stack.enter_context(storage.open_uri(uri, "rb", storage_options))
        if kind == "parquet":
            yield from _read_parquet(uri, raw, _size(uri, storage_options), text_field, stats,
                                     on_bytes, on_bad_input)
            return
        # Decompress on top of our own handle (fsspec's registry, as open_uri(compression=
        # "infer") does) so that raw.tell() can drive the progress bar in stored bytes.
        f = raw if compression is None else stack.enter_context(_decompressor(compression, raw))
        to_column = _json_column if kind == "json" else _text_column
        line = 0  # lines before this block, for error messages
        decoded, invalid_before = 0, stats.setdefault("invalid_utf8_bytes", 0)
        records, valued, first = 0, 0, None  # JSON: records, those with a value, the first one
        blocks, whole = _blocks(f), False
        while True:
            try:
                block = next(blocks, None)
            except _Damaged as e:
                what = f"{compression} data" if compression else "data"
                # Where it is, as far as known: a cut (EOFError) is at the end of the file, a bad
                # gzip header at its start; elsewhere, the text decoded before it is all we know.
                where = (f"after line {line}" if line else "in its first line" if e.offset else
                         "at its end, before any text could be decoded" if e.truncated else
                         "at its start" if isinstance(e.error, gzip.BadGzipFile) else
                         "before any text could be decoded")
                _bad_input(uri, f"truncated or corrupt {what} {where} ({e})", "replace the file",
                           "keep the lines before the damage", on_bad_input, stats, line)
                break
            if block is None:
                whole = True
                break
            wrong = _not_text(block, decoded, kind)
            if wrong:
                _bad_input(uri, *wrong, on_bad_input, stats, line)
                break
            column = to_column(uri, block, line, text_field, stats)
            if kind == "json":
                records += len(column)
                valued += len(column) - column.null_count
                if first is None and block.strip():
                    first = block.lstrip().split(b"\n", 1)[0]
            line += block.count(b"\n")
            decoded += len(block)
            yield _keep_text(column, stats)
            on_bytes(raw.tell())
        if whole and records and not valued:
            # Every record lacks the field (or holds null): a wrong --text-field, which would
            # otherwise drop the file with one INFO line (Parquet names the missing column).
            fields = []
            with contextlib.suppress(ValueError):  # (Arrow parsed it already; json should too)
                fields = list(json.loads(first.decode("utf-8", "replace")))
            shown = ", ".join(fields[:10]) + (", ..." if len(fields) > 10 else "") if fields else "none"
            _bad_input(uri, f"none of its {records} record(s) has a value in field {text_field!r} "
                       f"(fields of the first: {shown})", "choose the field with --text-field",
                       "leave it out", on_bad_input, stats)
            stats["skipped_rows"] -= records  # counted as a bad input instead
        invalid = stats["invalid_utf8_bytes"] - invalid_before
        if decoded and invalid > max_invalid_utf8 * decoded:
            raise PrepareError(
                f"{uri}: {invalid / decoded:.1%} of its {decoded} bytes are not UTF-8; it does not look "
                f"like UTF-8 text (a binary file, or another encoding: convert it, e.g. iconv -f latin1 "
                f"-t utf-8), or raise --max-invalid-utf8 (now {max_invalid_utf8}) to take it anyway")


def _decompressor(compression: str, raw: IO[bytes]):
    """A reader of the decompressed ``raw``: fsspec's, but for zstd (:class:`_ZstdReader`)."""
    if compression == "zstd":
        with contextlib.suppress(ImportError):
            import zstandard
            return _ZstdReader(raw, zstandard)
    return fsspec.compression.compr[compression](raw, mode="rb")


class _ZstdReader:
    """zstd data that ends inside a frame raises EOFError, as gzip, bz2 and xz do at a cut.

    zstandard's ``stream_reader`` (what fsspec opens ``.zst`` with) returns a clean end of file
    there, so a cut-off download passed for a whole corpus. Each frame goes through a
    ``decompressobj``, whose ``eof`` says whether the frame was complete; a frame's
    ``unused_data`` starts the next one (pzstd, concatenated files, skippable frames).
    """

    def __init__(self, raw: IO[bytes], zstandard):
        self._raw = raw
        self._dctx = zstandard.ZstdDecompressor()
        self._frame = None  # the frame being decoded; None between frames
        self._out = b""

    def read1(self, size: int = -1) -> bytes:
        while not self._out:
            data = self._raw.read(ZSTD_READ_BYTES)
            if not data:
                if self._frame is not None:
                    raise EOFError("Compressed file ended inside a zstd frame")
                return b""
            chunks = []
            while data:
                self._frame = self._frame or self._dctx.decompressobj()
                chunks.append(self._frame.decompress(data))
                if not self._frame.eof:
                    break
                data, self._frame = self._frame.unused_data, None
            self._out = b"".join(chunks)
        if size < 0 or size >= len(self._out):
            out, self._out = self._out, b""
        else:
            out, self._out = self._out[:size], self._out[size:]
        return out

    read = read1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _not_text(block: bytes, offset: int, kind: str) -> tuple[str, str, str] | None:
    """``(problem, fix, what --on-bad-input skip keeps)`` if ``block``, read from byte ``offset``
    of a text or JSON file, is not UTF-8 text; else None."""
    skip = "leave it out" if offset == 0 else "keep the lines before it"
    if offset == 0 and block.startswith(PARQUET_MAGIC):
        return (f"starts with {PARQUET_MAGIC.decode()}: it is a Parquet file, not "
                f"{'JSON Lines' if kind == 'json' else 'text'}", "rename it to end in .parquet", skip)
    for bom, encoding in BOMS if offset == 0 else ():
        if block.startswith(bom):
            return (f"starts with a {encoding} byte-order mark: it is {encoding} text, not UTF-8",
                    f"convert it (e.g. iconv -f {encoding} -t UTF-8)", skip)
    nul = block.count(0)
    if nul > MAX_NUL_SHARE * len(block):
        # UTF-16LE puts the NUL of an ASCII character at odd offsets, UTF-16BE at even ones
        even = block[offset % 2::2].count(0)
        encoding = "UTF-16BE" if even > nul - even else "UTF-16LE"
        span = f"its first {len(block)} bytes" if not offset else f"its {len(block)} bytes from byte {offset}"
        return (f"{nul / len(block):.0%} of {span} are NUL: it looks like {encoding} text (or binary), "
                "not UTF-8", f"convert it (e.g. iconv -f {encoding} -t UTF-8)", skip)
    return None


def _bad_input(uri: str, problem: str, fix: str, skip: str, on_bad_input: str, stats: dict,
               kept: int = 0, unit: str = "line") -> None:
    """Input that cannot be read (damaged, not UTF-8 text, not the format its name says): an error
    naming the file, the problem and the fix; or counted in ``bad_inputs`` and left out from there
    on, the ``kept`` lines (rows) before it staying."""
    if on_bad_input == "error":
        raise PrepareError(f"{uri}: {problem}; {fix}, or pass --on-bad-input skip to {skip} and go "
                           "on") from None
    stats["bad_inputs"] = stats.get("bad_inputs", 0) + 1
    left = f"kept the {kept} {unit}(s) before it, skipped the rest" if kept else "skipped it"
    logger.warning("prepare: %s: %s; %s (--on-bad-input skip)", uri, problem, left)


def _detail(e: BaseException) -> str:
    """An exception's message on one line (Arrow's Thrift errors span several)."""
    return " ".join(str(e).split()) or type(e).__name__


class _Damaged(Exception):
    """Reading a stream failed after ``offset`` good bytes (their whole lines came first);
    ``truncated``: it was cut short (what gzip, bz2 and xz raise EOFError for)."""

    def __init__(self, error: BaseException, offset: int):
        super().__init__(_detail(error))
        self.error, self.offset, self.truncated = error, offset, isinstance(error, EOFError)


def _blocks(f: IO[bytes], size: int | None = None) -> Iterator[bytes]:
    """The stream in pieces of about ``size`` bytes, each ending at a newline (but the last).

    A line longer than ``size`` stays whole: its pieces are collected until its newline comes.
    A read that fails (damaged compressed data) raises :class:`_Damaged` after the whole lines
    read before it: ``read1`` returns what one decompression step gives, so a damaged file
    loses what that step decoded and the line the damage cuts, not the whole block.
    """
    size = size or BLOCK_BYTES
    read = getattr(f, "read1", f.read)
    pending: list[bytes] = []
    n = offset = 0  # bytes in pending, bytes read
    newline = False  # whether pending holds one
    while True:
        try:
            data = read(size)
        except storage.decompress_errors() as e:
            head = b"".join(pending)
            cut = head.rfind(b"\n") + 1
            if cut:
                yield head[:cut]
            raise _Damaged(e, offset) from None
        if not data:
            break
        pending.append(data)
        n, offset = n + len(data), offset + len(data)
        newline = newline or b"\n" in data
        if n >= size and newline:
            head = b"".join(pending)
            cut = head.rfind(b"\n") + 1
            yield head[:cut]
            pending = [head[cut:]] if cut < len(head) else []
            n, newline = len(head) - cut, False
    if pending:
        yield b"".join(pending)


def _text_column(uri: str, block: bytes, line: int, text_field: str, stats: dict) -> pa.Array:
    """One row per line of ``block``, newline (and a ``\\r`` before it) removed."""
    if block.endswith(b"\n"):
        block = block[:-1]  # else split would add an empty last "line"
    try:
        # Validate and split in Arrow (C++), with no Python object per line.
        whole = pa.array([block], pa.large_binary()).cast(pa.large_string())
        lines = pc.split_pattern(whole, "\n").flatten().cast(pa.string())
    except pa.ArrowInvalid:  # invalid UTF-8 somewhere in the block: fix it line by line
        lines = pa.array([_decode(b, stats) for b in block.split(b"\n")], pa.string())
    if b"\r" in block:
        lines = pc.replace_substring_regex(lines, r"\r$", "")
    return lines


def _decode(raw: bytes, stats: dict) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        stats["replaced_utf8"] += 1
        text = raw.decode("utf-8", errors="replace")
        # one U+FFFD per invalid sequence, less those that were in the input already
        stats["invalid_utf8_bytes"] = (stats.get("invalid_utf8_bytes", 0) + text.count("\ufffd")
                                       - raw.count("\ufffd".encode()))
        return text


def _json_column(uri: str, block: bytes, line: int, text_field: str, stats: dict) -> pa.Array:
    """``text_field`` of each JSON object in ``block`` (null where missing)."""
    options = pajson.ParseOptions(explicit_schema=pa.schema([(text_field, pa.string())]),
                                  unexpected_field_behavior="ignore")
    try:
        # One Arrow block for the whole batch: a record may be any length (Arrow refuses
        # records that straddle two blocks).
        table = pajson.read_json(pa.BufferReader(block), parse_options=options,
                                 read_options=pajson.ReadOptions(block_size=len(block) + 1))
        column = table.column(0).combine_chunks()
        column.validate(full=True)  # Arrow's JSON reader does not check UTF-8
        return column
    except pa.ArrowInvalid:
        # A list of tokens, bad UTF-8, or a broken line: the slow path handles the first two
        # and names the line of the third.
        return _json_column_slow(uri, block, line, text_field, stats)


def _json_column_slow(uri: str, block: bytes, line: int, text_field: str, stats: dict) -> pa.Array:
    values = []
    for n, raw in enumerate(block.split(b"\n"), start=line + 1):
        if not raw.strip():
            continue
        try:
            record = json.loads(_decode(raw, stats))
        except json.JSONDecodeError as e:
            raise PrepareError(f"{uri}:{n}: not valid JSON ({e.msg}); .jsonl/.json input must hold "
                               "one JSON object per line (rename plain text to .txt)") from None
        if not isinstance(record, dict):
            raise PrepareError(f"{uri}:{n}: expected a JSON object per line, got a "
                               f"{type(record).__name__} (JSON arrays are not read: use JSON Lines)")
        value = record.get(text_field)
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            value = " ".join(value)
        elif value is not None and not isinstance(value, str):
            raise PrepareError(f"{uri}:{n}: field {text_field!r} is a {type(value).__name__}; it "
                               "must be a string or a list of strings (pick another with --text-field)")
        values.append(value)
    return pa.array(values, pa.string())


def _read_parquet(uri: str, raw: IO[bytes], size: int, text_field: str, stats: dict,
                  on_bytes, on_bad_input: str = "error") -> Iterator[pa.Array]:
    try:
        pf = pq.ParquetFile(raw)
        schema = pf.schema_arrow
    except (pa.ArrowInvalid, OSError) as e:  # empty, truncated, not Parquet: as train says it
        _bad_input(uri, f"not a readable Parquet file ({_detail(e)})", "replace the file", "leave it out",
                   on_bad_input, stats)
        return
    if text_field not in schema.names:
        raise PrepareError(f"{uri}: no column {text_field!r} (columns: {', '.join(schema.names)}); "
                           "choose one with --text-field")
    to_string = _string_converter(uri, text_field, schema.field(text_field).type)

    def columns():
        n = pf.num_row_groups
        for i in range(n):  # one row group at a time, only the one column
            for batch in pf.iter_batches(batch_size=PARQUET_BATCH_ROWS, row_groups=[i],
                                         columns=[text_field]):
                yield batch.column(0)
            on_bytes(size * (i + 1) // n)

    rows, batches = 0, columns()
    while True:
        try:
            column = next(batches, None)
        except (pa.ArrowInvalid, OSError) as e:  # a corrupt page: the rows before it stay
            _bad_input(uri, f"corrupt Parquet data after row {rows} ({_detail(e)})", "replace the file",
                       "keep the rows before the damage", on_bad_input, stats, rows, "row")
            return
        if column is None:
            return
        rows += len(column)
        yield _keep_text(to_string(column), stats)


def _string_converter(uri: str, name: str, t: pa.DataType):
    """A function turning a column of type ``t`` into ``pa.string()``, or a clear error."""
    def is_text(t):
        return (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)
                or (pa.types.is_dictionary(t) and is_text(t.value_type)))

    if is_text(t):
        return lambda a: a.cast(pa.string())
    if (pa.types.is_list(t) or pa.types.is_large_list(t)) and is_text(t.value_type):
        return _join_tokens
    raise PrepareError(f"{uri}: column {name!r} is {t}; it must be string or list<string> "
                       "(choose another with --text-field)")


def _join_tokens(tokens: pa.Array) -> pa.Array:
    """list<string> -> "tok tok tok"; a null token counts as empty rather than voiding its row."""
    large = pa.types.is_large_list(tokens.type)
    # binary_join wants the separator's type to equal the tokens': settle on large_string.
    tokens = tokens.cast((pa.large_list if large else pa.list_)(pa.large_string()))
    if tokens.values.null_count:
        cls = pa.LargeListArray if large else pa.ListArray
        tokens = cls.from_arrays(tokens.offsets, pc.fill_null(tokens.values, ""),
                                 mask=tokens.is_null())
    return pc.binary_join(tokens, pa.scalar(" ", pa.large_string())).cast(pa.string())


def _keep_text(column: pa.Array, stats: dict) -> pa.Array:
    """Drop nulls, empty and whitespace-only strings: they hold no words."""
    keep = pc.and_(pc.greater(pc.binary_length(column), 0), pc.invert(pc.utf8_is_space(column)))
    kept = column.filter(keep)  # null in `keep` (a null row) drops the row too
    stats["skipped_rows"] += len(column) - len(kept)
    return kept


# --------------------------------------------------------------------------------------------
# Output


def _prepare_output(output: str, overwrite: bool, storage_options: dict | None, inputs: list[str]) -> None:
    """Refuse to mix with earlier shards unless ``overwrite``; then mark the directory as being
    prepared (before its old commit marker and shards go: a crash in between leaves a directory
    that still reads as finished, or one that reads as unfinished, never a mix that looks finished)."""
    fs, path = storage.url_to_fs(output, storage_options)
    old: list[str] = []
    if fs.exists(path):
        if fs.isfile(path):
            raise PrepareError(f"{output}: is a file; --output must be a directory")
        names = {posixpath.basename(p.rstrip("/")) for p in fs.ls(path, detail=False)}
        old = [p for p in fs.ls(path, detail=False) if p.endswith(".parquet")]
        if old and not overwrite:
            unfinished = PREPARING in names and SUCCESS not in names
            raise PrepareError(f"{output}: already holds {len(old)} .parquet file(s)"
                               + (" of a prepare that did not finish" if unfinished else "")
                               + "; pass --overwrite to replace them or choose another --output")
    storage.makedirs(output, storage_options)
    marker = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "host": socket.gethostname(), "pid": os.getpid(),
              "inputs": list(inputs)}
    storage.write_text(storage.join(output, PREPARING), json.dumps(marker), storage_options)
    storage.remove(storage.join(output, SUCCESS), storage_options)
    for p in old:
        if _is_shard(posixpath.basename(p)):
            storage.remove(storage.unstrip(fs, p), storage_options)


def _commit(output: str, summary: dict, shard_rows: list[int], storage_options: dict | None) -> None:
    """``_SUCCESS`` (the manifest), then ``_PREPARING`` goes: the output now reads as finished."""
    manifest = {"shards": [{"name": posixpath.basename(u), "rows": n} for u, n in zip(summary["shards"], shard_rows)],
                **{k: v for k, v in summary.items() if k != "shards"}}
    storage.write_text(storage.join(output, SUCCESS), json.dumps(manifest, indent=1), storage_options)
    storage.remove(storage.join(output, PREPARING), storage_options)


def _is_shard(name: str) -> bool:
    """Whether ``name`` looks like a shard this step writes (``part-*.parquet``)."""
    return name.startswith("part-") and name.endswith(".parquet")


class _ShardWriter:
    """Rows in, ``part-NNNNN.parquet`` out: rolls over every ``rows_per_shard`` rows and cuts
    row groups of exactly ``rows_per_row_group`` rows (but the last of a shard).

    Rows are buffered until a full row group is there, because each ``write_table`` call starts
    a new row group: writing every input batch straight through would give tiny row groups.
    """

    def __init__(self, output: str, rows_per_shard: int, rows_per_row_group: int,
                 storage_options: dict | None):
        self.output, self.storage_options = output, storage_options
        self.rows_per_shard, self.rows_per_row_group = rows_per_shard, rows_per_row_group
        self.shards: list[str] = []
        self.shard_rows: list[int] = []  # rows of each closed shard
        self.rows = 0  # rows written or buffered, in all shards
        self._pending: list[pa.Array] = []
        self._pending_rows = 0
        self._shard_rows = 0
        self._stack: contextlib.ExitStack | None = None
        self._writer: pq.ParquetWriter | None = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if exc[0] is None:
            if self._pending_rows:
                self._write_group(self._pending_rows)
            self._close_shard()
        elif self._stack is not None:
            with contextlib.suppress(Exception):  # else its __del__ would write to a closed file
                self._writer.close()
            self._stack.__exit__(*exc)  # atomic_open drops the half-written shard
        return False

    def add(self, column: pa.Array) -> None:
        if not len(column):
            return
        self._pending.append(column)
        self._pending_rows += len(column)
        self.rows += len(column)
        while self._pending_rows >= self._group_size():
            self._write_group(self._group_size())

    def _group_size(self) -> int:
        return min(self.rows_per_row_group, self.rows_per_shard - self._shard_rows)

    def _write_group(self, n: int) -> None:
        # A chunked column slices without copying and is not bound by the 2 GiB per-array limit.
        table = pa.Table.from_arrays([pa.chunked_array(self._pending, pa.string())], schema=SCHEMA)
        rest = table.slice(n)
        self._pending = rest.column(0).chunks
        self._pending_rows = len(rest)
        if self._writer is None:
            self._open_shard()
        self._writer.write_table(table.slice(0, n), row_group_size=n)
        self._shard_rows += n
        if self._shard_rows == self.rows_per_shard:
            self._close_shard()

    def _open_shard(self) -> None:
        uri = storage.join(self.output, f"part-{len(self.shards):05d}.parquet")
        self._stack = contextlib.ExitStack()
        f = self._stack.enter_context(storage.atomic_open(uri, "wb", self.storage_options))
        self._writer = pq.ParquetWriter(f, SCHEMA, compression="zstd", write_page_checksum=True)
        self.shards.append(uri)

    def _close_shard(self) -> None:
        if self._writer is None:
            return
        self._writer.close()
        self._stack.close()  # the shard appears now, complete
        self.shard_rows.append(self._shard_rows)
        maybe_fail("prepare-shard", 0, len(self.shard_rows))  # tests: die with this many shards written
        self._writer, self._stack, self._shard_rows = None, None, 0


# --------------------------------------------------------------------------------------------
# Progress


class _Progress:
    """A byte-count bar on a terminal; one log line per file otherwise (logs, CI, pipes)."""

    def __init__(self, enabled: bool, total_bytes: int, n_files: int):
        self.n_files, self.done = n_files, 0
        self.bar = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm
            self.bar = tqdm(total=total_bytes, unit="B", unit_scale=True, unit_divisor=1024,
                            desc="prepare", file=sys.stderr)
        self._file_pos = 0

    def advance_to(self, pos: int) -> None:
        """``pos`` stored bytes of the current file have been read."""
        if self.bar is not None and pos > self._file_pos:
            self.bar.update(pos - self._file_pos)
            self._file_pos = pos

    def file_done(self, uri: str, index: int, size: int, rows: int, total_rows: int) -> None:
        self.advance_to(size)
        self._file_pos = 0
        if self.bar is not None:
            self.bar.set_postfix(files=f"{index + 1}/{self.n_files}", rows=total_rows, refresh=False)
        else:
            logger.info("prepare: [%d/%d] %s: %d rows (%d so far)", index + 1, self.n_files, uri,
                        rows, total_rows)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
