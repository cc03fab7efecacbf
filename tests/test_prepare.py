"""``w2v-dist prepare``: real files of every format in, Parquet shards out, row for row."""

from __future__ import annotations

import bz2
import gzip
import json
import os
import uuid

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from tests.conftest import DATA, shared_file
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
    (tmp_path / "a.jsonl").write_text('{"body": "x"}\n')
    with pytest.raises(PrepareError, match=r"no text found in 1 file\(s\) \(1 records without text\); "
                                           r".*--text-field"):
        run([tmp_path / "a.jsonl"], tmp_path / "out")
    assert not list((tmp_path / "out").glob("*.parquet"))
