"""``w2v-dist prepare``: real files of every format in, Parquet shards out, row for row."""

from __future__ import annotations

import bz2
import gzip
import json
import os
import uuid
import zlib

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from tests.conftest import DATA, cli, shared_file
from w2v_dist import prepare as prepare_mod
from w2v_dist.prepare import PrepareError, prepare

GCIDE = DATA / "gcide_en.txt.gz"


def run(inputs, out, **kw):
    kw.setdefault("progress", False)
    return prepare([str(i) for i in inputs], str(out), **kw)


def rows(summary) -> list[str]:
    texts = []
    for uri in summary["shards"]:
        with fsspec.open(uri, "rb") as f:
            table = pq.read_table(f)
        assert table.schema == pa.schema([("text", pa.string())])
        texts += table.column("text").to_pylist()
    return texts


@pytest.fixture(scope="module")
def gcide_lines() -> list[bytes]:
    """The first 2,000 lines of the GCIDE dictionary, newlines kept."""
    shared_file(GCIDE)
    with gzip.open(GCIDE, "rb") as f:
        return [f.readline() for _ in range(2000)]


def expected(lines: list[bytes]) -> list[str]:
    out = [ln.decode().rstrip("\n").removesuffix("\r") for ln in lines]
    return [s for s in out if s.strip()]


# --- plain text -----------------------------------------------------------------------------


def test_plain_text_rows_equal_lines(tmp_path):
    src = tmp_path / "a.txt"
    src.write_bytes("first line\n\n  \nsecond  line \r\nthird — ünïcödé\nlast, no newline".encode())
    s = run([src], tmp_path / "out")
    assert rows(s) == ["first line", "second  line ", "third — ünïcödé", "last, no newline"]
    assert s["rows"] == 4 and s["skipped_rows"] == 2 and s["input_files"] == 1
    assert s["bytes_in"] == src.stat().st_size and s["replaced_utf8"] == 0
    json.dumps(s)  # the summary is JSON-serialisable


@pytest.mark.parametrize("suffix", [".txt", ".txt.gz", ".txt.bz2", ".txt.zst"])
def test_compressed_text(tmp_path, gcide_lines, suffix):
    raw = b"".join(gcide_lines)
    if suffix.endswith(".gz"):
        raw = gzip.compress(raw)
    elif suffix.endswith(".bz2"):
        raw = bz2.compress(raw)
    elif suffix.endswith(".zst"):
        half = len(raw) // 2  # two zstd frames, as pzstd or concatenated files give
        raw = (zstandard.ZstdCompressor().compress(raw[:half])
               + zstandard.ZstdCompressor().compress(raw[half:]))
    src = tmp_path / f"gcide{suffix}"
    src.write_bytes(raw)
    s = run([src], tmp_path / "out")
    assert rows(s) == expected(gcide_lines)
    assert s["bytes_in"] == len(raw)


def test_small_blocks_keep_lines_whole(tmp_path, gcide_lines, monkeypatch):
    # Blocks far shorter than most lines: every line is assembled from several reads.
    monkeypatch.setattr(prepare_mod, "BLOCK_BYTES", 13)
    src = tmp_path / "g.txt.gz"
    src.write_bytes(gzip.compress(b"".join(gcide_lines[:300])))
    assert rows(run([src], tmp_path / "out")) == expected(gcide_lines[:300])


def test_invalid_utf8_is_replaced_and_counted(tmp_path):
    src = tmp_path / "bad.txt"
    src.write_bytes(b"good line\nbad \xff byte\nfine \xc3\xa9\n")
    s = run([src], tmp_path / "out")
    assert rows(s) == ["good line", "bad \ufffd byte", "fine é"]
    assert s["replaced_utf8"] == 1


# --- JSON Lines -------------------------------------------------------------------------------


JSON_RECORDS = [
    {"text": "alpha beta", "id": 1},
    {"id": 2},  # no text: skipped
    {"text": None},  # null: skipped
    {"text": "gamma", "meta": {"nested": [1, 2]}},
    {"text": ""},  # blank: skipped
    {"text": "delta \u00e9 \U0001F600"},
]


@pytest.mark.parametrize("name", ["d.jsonl", "d.jsonl.gz", "d.ndjson", "d.json.zst"])
def test_jsonl(tmp_path, name):
    raw = "\n".join(json.dumps(r) for r in JSON_RECORDS).encode() + b"\n\n"
    if name.endswith(".gz"):
        raw = gzip.compress(raw)
    elif name.endswith(".zst"):
        raw = zstandard.ZstdCompressor().compress(raw)
    (tmp_path / name).write_bytes(raw)
    s = run([tmp_path / name], tmp_path / "out")
    assert rows(s) == ["alpha beta", "gamma", "delta é 😀"]
    assert s["skipped_rows"] == 3


def test_jsonl_token_lists_other_field_and_bad_utf8(tmp_path):
    src = tmp_path / "t.jsonl"
    src.write_bytes(b'{"body": ["new", "york"]}\n{"body": "plain"}\n{"body": "x \xff y"}\n{"no": 1}\n')
    s = run([src], tmp_path / "out", text_field="body")
    assert rows(s) == ["new york", "plain", "x \ufffd y"]
    assert s["skipped_rows"] == 1 and s["replaced_utf8"] == 1


def test_jsonl_errors_name_file_and_line(tmp_path):
    src = tmp_path / "broken.jsonl"
    src.write_text('{"text": "ok"}\n{"text": "ok"}\n{"text": oops}\n')
    with pytest.raises(PrepareError, match=r"broken\.jsonl:3: not valid JSON .*one JSON object per line"):
        run([src], tmp_path / "out")
    src.write_text('{"text": 5}\n')
    with pytest.raises(PrepareError, match=r"broken\.jsonl:1: field 'text' is a int; .*--text-field"):
        run([src], tmp_path / "out")
    src.write_text('["a", "b"]\n')
    with pytest.raises(PrepareError, match=r"broken\.jsonl:1: expected a JSON object per line, got a list"):
        run([src], tmp_path / "out")


# --- Parquet ----------------------------------------------------------------------------------


def test_parquet_string_and_token_list_columns(tmp_path):
    pq.write_table(pa.table({"id": [1, 2, 3, 4], "text": ["one two", None, "three", " "]}),
                   tmp_path / "s.parquet", row_group_size=2)
    pq.write_table(pa.table({"text": pa.array([["four", "five"], None, [], ["six", None, "seven"]],
                                              pa.list_(pa.large_string()))}),
                   tmp_path / "l.parquet")
    pq.write_table(pa.table({"body": pa.array(["eight"], pa.large_string())}), tmp_path / "b.parquet")
    s = run([tmp_path / "s.parquet", tmp_path / "l.parquet"], tmp_path / "out")
    assert rows(s) == ["one two", "three", "four five", "six  seven"]
    assert s["skipped_rows"] == 4
    s = run([tmp_path / "b.parquet"], tmp_path / "out2", text_field="body")
    assert rows(s) == ["eight"]


def test_parquet_without_column(tmp_path):
    pq.write_table(pa.table({"id": [1], "body": ["x"]}), tmp_path / "p.parquet")
    with pytest.raises(PrepareError, match=r"p\.parquet: no column 'text' \(columns: id, body\); "
                                           r"choose one with --text-field"):
        run([tmp_path / "p.parquet"], tmp_path / "out")
    with pytest.raises(PrepareError, match=r"column 'id' is int64; it must be string or list<string>"):
        run([tmp_path / "p.parquet"], tmp_path / "out", text_field="id")


# --- several inputs, shards -------------------------------------------------------------------


def test_directory_glob_and_file_inputs_keep_order(tmp_path):
    d = tmp_path / "corpus"
    (d / "sub").mkdir(parents=True)
    (d / "b.txt").write_text("b1\nb2\n")
    (d / "a.txt").write_text("a1\n")
    (d / "sub" / "c.txt.gz").write_bytes(gzip.compress(b"c1\n"))
    (d / "_SUCCESS").write_text("")
    (d / ".a.txt.crc").write_text("junk\n")
    (tmp_path / "x.jsonl").write_text('{"text": "x1"}\n')
    s = run([d, tmp_path / "x.jsonl", f"{d}/*.txt"], tmp_path / "out")
    # directory listing sorted; files reached twice (dir, then glob) are read once
    assert rows(s) == ["a1", "b1", "b2", "c1", "x1"]
    assert s["input_files"] == 4


def test_output_inside_input_directory_is_not_read(tmp_path):
    (tmp_path / "a.txt").write_text("a\n")
    run([tmp_path], tmp_path / "out")
    s = run([tmp_path], tmp_path / "out", overwrite=True)  # would read out/part-00000.parquet
    assert rows(s) == ["a"] and s["input_files"] == 1


def test_shard_rollover_and_row_groups(tmp_path):
    (tmp_path / "1.txt").write_text("".join(f"line {i}\n" for i in range(7)))
    (tmp_path / "2.txt").write_text("".join(f"line {i}\n" for i in range(7, 25)))
    out = tmp_path / "out"
    s = run([f"{tmp_path}/*.txt"], out, rows_per_shard=10, rows_per_row_group=4)
    assert [os.path.basename(u) for u in s["shards"]] == [
        "part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    groups = []
    for uri in s["shards"]:
        md = pq.ParquetFile(uri).metadata
        groups.append([md.row_group(i).num_rows for i in range(md.num_row_groups)])
        assert md.row_group(0).column(0).compression == "ZSTD"
    assert groups == [[4, 4, 2], [4, 4, 2], [4, 1]]
    assert rows(s) == [f"line {i}" for i in range(25)]
    # no temp files; the commit marker lists the shards
    assert sorted(os.listdir(out)) == ["_SUCCESS"] + [os.path.basename(u) for u in s["shards"]]
    manifest = json.loads((out / "_SUCCESS").read_text())
    assert [(x["name"], x["rows"]) for x in manifest["shards"]] == [
        ("part-00000.parquet", 10), ("part-00001.parquet", 10), ("part-00002.parquet", 5)]


def test_row_group_clamped_to_shard(tmp_path):
    (tmp_path / "a.txt").write_text("".join(f"{i}\n" for i in range(5)))
    s = run([tmp_path / "a.txt"], tmp_path / "out", rows_per_shard=2, rows_per_row_group=100)
    assert [pq.ParquetFile(u).metadata.num_rows for u in s["shards"]] == [2, 2, 1]


def test_memory_uris():
    root = f"memory://prepare-test-{uuid.uuid4().hex}"
    fs = fsspec.filesystem("memory")
    try:
        with fs.open(f"{root}/in/a.txt.gz", "wb") as f:
            f.write(gzip.compress(b"one\ntwo\n"))
        s = prepare([f"{root}/in"], f"{root}/out", rows_per_shard=1, progress=False)
        assert s["shards"] == [f"{root}/out/part-00000.parquet", f"{root}/out/part-00001.parquet"]
        assert rows(s) == ["one", "two"]
    finally:
        fs.rm(root.removeprefix("memory://"), recursive=True)


# --- errors -----------------------------------------------------------------------------------


def test_missing_path_and_empty_glob(tmp_path):
    with pytest.raises(PrepareError, match=r"nope\.txt: no such file or directory"):
        run([tmp_path / "nope.txt"], tmp_path / "out")
    with pytest.raises(PrepareError, match=r"\*\.txt: matches no files \(check the glob"):
        run([f"{tmp_path}/*.txt"], tmp_path / "out")


def test_existing_output_needs_overwrite(tmp_path):
    (tmp_path / "a.txt").write_text("".join(f"{i}\n" for i in range(5)))
    out = tmp_path / "out"
    run([tmp_path / "a.txt"], out, rows_per_shard=2)
    with pytest.raises(PrepareError, match=r"out: already holds 3 \.parquet file\(s\); pass --overwrite"):
        run([tmp_path / "a.txt"], out)
    s = run([tmp_path / "a.txt"], out, overwrite=True)
    assert sorted(os.listdir(out)) == ["_SUCCESS", "part-00000.parquet"]  # the old part-00001/2 are gone
    assert rows(s) == ["0", "1", "2", "3", "4"]


def test_bad_arguments(tmp_path):
    (tmp_path / "a.txt").write_text("x\n")
    with pytest.raises(PrepareError, match=r"--rows-per-shard must be >= 1, got 0"):
        run([tmp_path / "a.txt"], tmp_path / "out", rows_per_shard=0)
    with pytest.raises(PrepareError, match=r"--rows-per-row-group must be >= 1, got -1"):
        run([tmp_path / "a.txt"], tmp_path / "out", rows_per_row_group=-1)
    assert issubclass(PrepareError, ValueError)


def test_no_text_at_all(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"text": " "}\n')
    with pytest.raises(PrepareError, match=r"no text found in 1 file\(s\) \(1 records without text\); "
                                           r".*--text-field"):
        run([tmp_path / "a.jsonl"], tmp_path / "out")
    assert not list((tmp_path / "out").glob("*.parquet"))


# --- bad input, through the real entry point: one line naming the file, or skipped and counted -----


def error_line(p) -> str:
    """Exit 2, no traceback, and the user's one line, last on stderr."""
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr, p.stderr
    return p.stderr.strip().splitlines()[-1]


def prepare_cli(*inputs, skip: bool = False):
    """``w2v-dist prepare INPUTS`` into ``out/`` beside the first (``--on-bad-input skip``)."""
    out = os.path.join(os.path.dirname(inputs[0]), "out")
    return cli("prepare", *map(str, inputs), "--output", out, "--overwrite",
               *(["--on-bad-input", "skip"] if skip else []), check=False)


def written(p) -> tuple[dict, list[str]]:
    """A prepare that succeeded: its summary and the rows of its shards, read with pyarrow."""
    assert p.returncode == 0, p.stderr
    out = p.args[p.args.index("--output") + 1]
    shards = sorted(f for f in os.listdir(out) if f.startswith("part-"))
    return json.loads(p.stdout), [r for f in shards for r in pq.read_table(os.path.join(out, f))["text"].to_pylist()]


GOOD = [f"good line {i}" for i in range(5)]


def good_file(tmp_path):
    (tmp_path / "good.txt").write_text("".join(f"{s}\n" for s in GOOD))
    return tmp_path / "good.txt"


def test_a_truncated_zst_is_an_error_like_a_truncated_gz(tmp_path):
    # zstandard's stream reader (fsspec's for .zst) ends a cut frame as a clean end of file: a
    # cut-off download became a corpus without a word. Two frames (as pzstd writes), the second
    # cut: its one zstd block cannot be decoded, so the lines of the first are exactly those kept.
    first = zstandard.ZstdCompressor().compress(b"".join(b"frame one, line %d\n" % i for i in range(1000)))
    second = zstandard.ZstdCompressor().compress(b"frame two\n" * 1000)
    cut = tmp_path / "cut.txt.zst"
    cut.write_bytes(first + second[: len(second) // 2])
    assert error_line(prepare_cli(cut)) == (
        f"w2v-dist: error: {cut}: truncated or corrupt zstd data after line 1000 (Compressed file ended inside "
        "a zstd frame); replace the file, or pass --on-bad-input skip to keep the lines before the damage and go on")
    # one frame, cut: nothing of it decodes, and the cut is at its end (not "at its start")
    short = tmp_path / "short.txt.zst"
    short.write_bytes(second[:-4])
    assert error_line(prepare_cli(short)) == (
        f"w2v-dist: error: {short}: truncated or corrupt zstd data at its end, before any text could be decoded "
        "(Compressed file ended inside a zstd frame); replace the file, or pass --on-bad-input skip to keep the "
        "lines before the damage and go on")
    summary, texts = written(prepare_cli(good_file(tmp_path), cut, short, skip=True))
    assert summary["bad_inputs"] == 2 and summary["rows"] == len(GOOD) + 1000
    assert texts == GOOD + [f"frame one, line {i}" for i in range(1000)]


def test_a_gz_cut_at_its_end_is_not_said_to_be_damaged_at_its_start(tmp_path):
    # A small .gz cut at its end was reported "at its start": its one 8 MiB block was lost whole.
    text = b"".join(b"line %d of a small file\n" % i for i in range(1000))
    cut_gz = gzip.compress(text)[:-12]
    cut = tmp_path / "cut.txt.gz"
    cut.write_bytes(cut_gz)
    lines = zlib.decompressobj(wbits=31).decompress(cut_gz).count(b"\n")  # whole in what zlib decodes
    assert 900 < lines < 1000
    assert error_line(prepare_cli(cut)) == (
        f"w2v-dist: error: {cut}: truncated or corrupt gzip data after line {lines} (Compressed file ended before "
        "the end-of-stream marker was reached); replace the file, or pass --on-bad-input skip to keep the lines "
        "before the damage and go on")
    summary, texts = written(prepare_cli(cut, good_file(tmp_path), skip=True))
    assert summary["bad_inputs"] == 1
    assert texts == [f"line {i} of a small file" for i in range(lines)] + GOOD
    # one long line, cut: some of it decoded, no line whole
    one = gzip.compress(b" ".join(b"w%d" % i for i in range(50_000)))
    long = tmp_path / "long.txt.gz"
    long.write_bytes(one[: len(one) * 2 // 3])
    assert error_line(prepare_cli(long)) == (
        f"w2v-dist: error: {long}: truncated or corrupt gzip data in its first line (Compressed file ended before "
        "the end-of-stream marker was reached); replace the file, or pass --on-bad-input skip to keep the lines "
        "before the damage and go on")


WIDE = {  # encoding -> what prepare says of a file in it, "{size}" its size
    "utf-16": "starts with a UTF-16 byte-order mark: it is UTF-16 text, not UTF-8; convert it "
              "(e.g. iconv -f UTF-16 -t UTF-8)",
    "utf-32": "starts with a UTF-32 byte-order mark: it is UTF-32 text, not UTF-8; convert it "
              "(e.g. iconv -f UTF-32 -t UTF-8)",
    "utf-16-le": "50% of its first {size} bytes are NUL: it looks like UTF-16LE text (or binary), not UTF-8; "
                 "convert it (e.g. iconv -f UTF-16LE -t UTF-8)",
    "utf-16-be": "50% of its first {size} bytes are NUL: it looks like UTF-16BE text (or binary), not UTF-8; "
                 "convert it (e.g. iconv -f UTF-16BE -t UTF-8)",
}


def test_utf16_and_utf32_are_refused_not_read_as_single_letters(tmp_path):
    # NUL is valid UTF-8: UTF-16 passed the invalid-UTF-8 check and became rows of single letters.
    for encoding, says in WIDE.items():
        src = tmp_path / f"{encoding}.txt"
        src.write_bytes(("over the lazy dog\n" * 50).encode(encoding))
        assert error_line(prepare_cli(src)) == (
            f"w2v-dist: error: {src}: {says.format(size=src.stat().st_size)}, or pass --on-bad-input skip to "
            "leave it out and go on")
    summary, texts = written(prepare_cli(good_file(tmp_path), *(tmp_path / f"{e}.txt" for e in WIDE), skip=True))
    assert summary["bad_inputs"] == len(WIDE) and texts == GOOD


def test_nul_bytes_further_in_keep_the_lines_before_them(tmp_path, monkeypatch):
    # Blocks of 64 bytes, lines of 64 bytes: the first block holding NULs starts where UTF-16 does.
    monkeypatch.setattr(prepare_mod, "BLOCK_BYTES", 64)
    good = [f"good line {i:02d} ".ljust(63, "x") for i in range(20)]
    src = tmp_path / "mixed.txt"
    src.write_bytes("".join(f"{s}\n" for s in good).encode() + "wide line\n".encode("utf-16-le") * 10)
    with pytest.raises(PrepareError, match=(
            rf"^{src}: \d+% of its \d+ bytes from byte 1280 are NUL: it looks like UTF-16LE text \(or binary\), "
            r"not UTF-8; convert it \(e\.g\. iconv -f UTF-16LE -t UTF-8\), or pass --on-bad-input skip to keep "
            r"the lines before it and go on$")):
        run([src], tmp_path / "out")
    s = run([src], tmp_path / "out", overwrite=True, on_bad_input="skip")
    assert rows(s) == good and s["bad_inputs"] == 1


def test_pq_and_parq_are_parquet_as_train_takes_them_and_par1_is_never_text(tmp_path):
    # prepare read corpus.pq as text (rows of raw PAR1 bytes) though train lists .pq/.parq as Parquet.
    table = pa.table({"text": ["one two", "three"], "id": [1, 2]})
    pq.write_table(table, tmp_path / "corpus.pq")
    pq.write_table(table.slice(1), tmp_path / "plain.parq")
    summary, texts = written(prepare_cli(tmp_path / "corpus.pq", tmp_path / "plain.parq"))
    assert texts == ["one two", "three", "three"] and summary["replaced_utf8"] == 0
    # Parquet under any other name is not text either
    for name, kind in [("corpus.txt", "text"), ("corpus.jsonl", "JSON Lines")]:
        (tmp_path / name).write_bytes((tmp_path / "corpus.pq").read_bytes())
        assert error_line(prepare_cli(tmp_path / name)) == (
            f"w2v-dist: error: {tmp_path / name}: starts with PAR1: it is a Parquet file, not {kind}; rename it to "
            "end in .parquet, or pass --on-bad-input skip to leave it out and go on")
    summary, texts = written(prepare_cli(good_file(tmp_path), tmp_path / "corpus.txt", skip=True))
    assert summary["bad_inputs"] == 1 and texts == GOOD


def arrow_says(path) -> tuple[int, str]:
    """Rows pyarrow reads from ``path`` before it fails, and its message on one line."""
    n = 0
    try:
        f = pq.ParquetFile(path)
        for i in range(f.num_row_groups):
            for batch in f.iter_batches(row_groups=[i]):
                n += len(batch)
    except (pa.ArrowInvalid, OSError) as e:
        return n, " ".join(str(e).split())
    raise AssertionError(f"{path} is readable")


def test_empty_cut_and_corrupt_parquet_are_one_line_not_a_traceback(tmp_path):
    pq.write_table(pa.table({"text": [f"row {i}" for i in range(50)]}), tmp_path / "whole.parquet",
                   row_group_size=10)
    whole = (tmp_path / "whole.parquet").read_bytes()
    (tmp_path / "empty.parquet").write_bytes(b"")
    (tmp_path / "cut.parquet").write_bytes(whole[: len(whole) // 2])
    for name in ("empty.parquet", "cut.parquet"):
        path = tmp_path / name
        assert error_line(prepare_cli(path)) == (
            f"w2v-dist: error: {path}: not a readable Parquet file ({arrow_says(path)[1]}); replace the file, or "
            "pass --on-bad-input skip to leave it out and go on")
    # a page header overwritten in the third row group: the two before it are read
    md = pq.ParquetFile(tmp_path / "whole.parquet").metadata.row_group(2).column(0)
    page = md.dictionary_page_offset or md.data_page_offset
    bad = tmp_path / "page.parquet"
    bad.write_bytes(whole[:page] + b"\xff" * 6 + whole[page + 6:])
    before, says = arrow_says(bad)
    assert before == 20
    assert error_line(prepare_cli(bad)) == (
        f"w2v-dist: error: {bad}: corrupt Parquet data after row 20 ({says}); replace the file, or pass "
        "--on-bad-input skip to keep the rows before the damage and go on")
    summary, texts = written(prepare_cli(good_file(tmp_path), tmp_path / "empty.parquet", tmp_path / "cut.parquet",
                                         bad, skip=True))
    assert summary["bad_inputs"] == 3 and texts == GOOD + [f"row {i}" for i in range(20)]


def test_jsonl_without_the_field_is_an_error_naming_the_fields_it_has(tmp_path):
    # A JSONL file none of whose records holds --text-field was dropped with an INFO line "0 rows"
    # (the same mistake in Parquet is an error).
    (tmp_path / "good.jsonl").write_text("".join(json.dumps({"text": s}) + "\n" for s in GOOD))
    (tmp_path / "other.jsonl").write_text('{"body": "x", "id": 1}\n\n{"body": "y", "id": 2}\n')
    (tmp_path / "empty.jsonl").write_bytes(b"")
    assert error_line(prepare_cli(tmp_path / "good.jsonl", tmp_path / "other.jsonl")) == (
        f"w2v-dist: error: {tmp_path / 'other.jsonl'}: none of its 2 record(s) has a value in field 'text' (fields "
        "of the first: body, id); choose the field with --text-field, or pass --on-bad-input skip to leave it out "
        "and go on")
    summary, texts = written(prepare_cli(tmp_path / "good.jsonl", tmp_path / "other.jsonl", tmp_path / "empty.jsonl",
                                         skip=True))
    assert summary["bad_inputs"] == 1 and summary["skipped_rows"] == 0 and texts == GOOD
    # an empty file is no mistake: taken, as before
    summary, texts = written(prepare_cli(tmp_path / "good.jsonl", tmp_path / "empty.jsonl"))
    assert summary["bad_inputs"] == 0 and summary["input_files"] == 2 and texts == GOOD
