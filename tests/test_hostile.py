"""Hostile input: every case has a policy (--on-bad-shard error|skip) and an exact outcome."""

from __future__ import annotations

import json
import signal
import subprocess
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import cli, gcide_lines, plain_lines, run_vocab
from w2v_dist.config import TokenizerConfig
from w2v_dist.corpus.dataset import BadData, token_stream
from w2v_dist.corpus.shards import scan_shards

TRAIN = ["--epochs", "1", "--dim", "8", "--min-count", "2", "--workers", "0", "--threads", "1"]


@pytest.fixture()
def corpus(tmp_path):
    d = tmp_path / "c"
    d.mkdir()
    lines = gcide_lines(3000)
    pq.write_table(pa.table({"text": lines[:1500]}), d / "part-00000.parquet", row_group_size=500)
    pq.write_table(pa.table({"text": lines[1500:]}), d / "part-00001.parquet", row_group_size=500)
    return d


def train(corpus, out, *extra, env=None, timeout=300):
    return cli("train", str(corpus), "--output", str(out), *TRAIN, *extra, check=False, env=env, timeout=timeout)


def ok(p, out):
    assert p.returncode == 0, p.stderr
    return json.loads((out / "summary.json").read_text())["skipped"]


def error_line(p):
    """What the user sees of a refused input: exit code 2 and one error line, last, with no
    traceback anywhere above it (log lines may come before)."""
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr, p.stderr
    errors = [line for line in p.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0] == p.stderr.strip().splitlines()[-1], p.stderr
    assert errors[0].startswith("w2v-dist: error: "), p.stderr
    return errors[0]


@pytest.mark.parametrize("how", ["not parquet", "truncated footer"])
def test_unreadable_file(corpus, tmp_path, how):
    bad = corpus / "part-00002.parquet"
    if how == "not parquet":
        bad.write_bytes(b"this is not a parquet file\n" * 10)
    else:
        pq.write_table(pa.table({"text": ["a b c"] * 100}), bad)
        bad.write_bytes(bad.read_bytes()[:-20])
    line = error_line(train(corpus, tmp_path / "r1"))
    assert f"{bad}: not a readable Parquet file" in line and "--on-bad-shard skip" in line
    assert not (tmp_path / "r1").exists()
    p = train(corpus, tmp_path / "r2", "--on-bad-shard", "skip")
    assert ok(p, tmp_path / "r2")["bad_files"] == 1
    # skipped, it is not told to pass the flag that skipped it
    said = [line for line in p.stderr.splitlines() if f"skipping {bad}: not a readable Parquet file" in line]
    assert len(said) == 1 and said[0].endswith(") (--on-bad-shard skip)"), p.stderr


def test_corrupt_page(corpus, tmp_path):
    bad = corpus / "part-00002.parquet"
    pq.write_table(pa.table({"text": gcide_lines(400, start=5000)}), bad, row_group_size=200,
                   write_page_checksum=True, compression="none")
    data = bytearray(bad.read_bytes())
    data[200:260] = b"\x00" * 60  # inside the first data page
    bad.write_bytes(bytes(data))
    line = error_line(train(corpus, tmp_path / "r1"))
    assert f"{bad} row group 0: cannot be read" in line
    skipped = ok(train(corpus, tmp_path / "r2", "--on-bad-shard", "skip"), tmp_path / "r2")
    assert skipped["bad_row_groups"] == 1


def test_zero_row_files_and_row_groups(corpus, tmp_path):
    pq.write_table(pa.table({"text": pa.array([], pa.string())}), corpus / "part-00002.parquet")
    with pq.ParquetWriter(corpus / "part-00003.parquet", pa.schema([("text", pa.string())])) as w:
        w.write_table(pa.table({"text": pa.array([], pa.string())}))
        w.write_table(pa.table({"text": ["some words here and there"] * 5}))
    skipped = ok(train(corpus, tmp_path / "r"), tmp_path / "r")
    assert skipped["empty_files"] == 1 and skipped["empty_row_groups"] == 2  # the empty file has one too


def _with_bad_utf8(path):
    good = [b"plain words here", b"more plain words"] * 50
    raw = pa.array(good + [b"bad \xff\xfe bytes here"], pa.binary())
    pq.write_table(pa.table({"text": raw.view(pa.string())}), path)  # pyarrow does not validate


def test_non_utf8_rows(corpus, tmp_path):
    bad = corpus / "part-00002.parquet"
    _with_bad_utf8(bad)
    line = error_line(train(corpus, tmp_path / "r1"))
    assert f"{bad} row group 0: 1 row(s) are not valid UTF-8" in line
    assert ok(train(corpus, tmp_path / "r2", "--on-bad-shard", "skip"), tmp_path / "r2")["non_utf8_rows"] == 1


def test_non_utf8_rows_are_counted_one_by_one(tmp_path):
    """Guards: the count of bad-UTF-8 rows fixed at 1 (the case above has exactly one bad row).

    Three bad rows in two row groups: the error names the first row group's two, the skip report
    says 3, and exactly the good rows were trained (their words counted with str.split, not with
    the reader)."""
    d = tmp_path / "c"
    d.mkdir()
    lines = plain_lines(2000)
    pq.write_table(pa.table({"text": lines[:1000]}), d / "part-00000.parquet", row_group_size=500)
    good = [line.encode() for line in lines[1000:]]
    bad_rows = {10: b"bad \xff word", 400: b"\xfe\xfe", 700: b"more \xc3( words"}  # rows 10, 400: group 0
    raw = [bad_rows.get(i, row) for i, row in enumerate(good)]
    bad = d / "part-00001.parquet"
    pq.write_table(pa.table({"text": pa.array(raw, pa.binary()).view(pa.string())}), bad, row_group_size=500)
    line = error_line(train(d, tmp_path / "r1"))
    assert line.startswith(f"w2v-dist: error: {bad} row group 0: 2 row(s) are not valid UTF-8"), line
    out = tmp_path / "r2"
    assert ok(train(d, out, "--on-bad-shard", "skip"), out)["non_utf8_rows"] == 3
    kept = lines[:1000] + [row for i, row in enumerate(lines[1000:]) if i not in bad_rows]
    counts = Counter(w for row in kept for w in row.split())
    words, _ = run_vocab(out)
    assert json.loads((out / "summary.json").read_text())["words"] == sum(counts[w] for w in words)


def test_bad_shard_found_by_a_reader_worker_is_one_line(corpus, tmp_path):
    """Guards: the CLI's unwrapping of an error raised inside a DataLoader reader process (the
    user would see "Caught BadData in DataLoader worker process 0." or the worker's traceback),
    and the trainer's exit after it (it used to wait forever for the reader).

    The reading pass before training finds bad data in the main process; only a file that turns
    bad later is found by a reader worker. So: a run is killed after its first checkpoint, two
    bytes of one row of a shard stored uncompressed are overwritten in place with bytes that are
    not UTF-8 (the same sizes: the footer, which a resume compares, is the listed one), and the
    rerun resumes and meets it in a reader."""
    args = ["--workers", "1", "--epochs", "2", "--checkpoint-every", "2", "--batch-words", "1000"]
    out = tmp_path / "r"
    shard = corpus / "part-00001.parquet"
    rows = pq.read_table(shard).column("text").to_pylist()
    pq.write_table(pa.table({"text": rows}), shard, row_group_size=500, compression="none", use_dictionary=False)
    p = train(corpus, out, *args, env={"W2V_DIST_FAULT": "kill@step:0:3"})
    assert p.returncode == -signal.SIGKILL, p.stderr
    data = bytearray(shard.read_bytes())
    # a long row of row group 2 (500 rows each) whose bytes occur once in the file
    row = next(r.encode() for r in rows[1000:1500] if len(r) > 40 and data.count(r.encode()) == 1)
    at = data.find(row)
    data[at:at + 2] = b"\xff\xfe"
    shard.write_bytes(bytes(data))
    try:
        p = train(corpus, out, *args, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail("the trainer printed its error but never exited (a reader process outlived it)")
    assert "resuming from" in p.stderr
    line = error_line(p)
    assert line == (f"w2v-dist: error: {shard} row group 2: 1 row(s) are not valid UTF-8; "
                    "pass --on-bad-shard skip to leave such data out"), p.stderr


def test_null_rows_are_counted(corpus, tmp_path):
    pq.write_table(pa.table({"text": ["words and words", None, None, "more words"]}), corpus / "part-00002.parquet")
    assert ok(train(corpus, tmp_path / "r"), tmp_path / "r")["null_rows"] == 2


def test_a_row_of_ten_million_characters(corpus, tmp_path):
    words = " ".join(["alpha", "beta", "gamma", "delta", "epsilon"] * 4)
    row = (words + " ") * (10_000_000 // (len(words) + 1))
    assert len(row) >= 9_900_000
    pq.write_table(pa.table({"text": [row, "alpha beta"]}), corpus / "part-00002.parquet")
    assert ok(train(corpus, tmp_path / "r"), tmp_path / "r") is not None
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["words"] > 1_500_000  # the long row (1.6M words) was read, cut into 1000-word sentences


def test_wrong_column_type(corpus, tmp_path):
    pq.write_table(pa.table({"text": [1, 2, 3]}), corpus / "part-00002.parquet")
    line = error_line(train(corpus, tmp_path / "r1"))
    assert "column 'text' has type int64, expected string or list<string>" in line
    assert ok(train(corpus, tmp_path / "r2", "--on-bad-shard", "skip"), tmp_path / "r2")["bad_files"] == 1


def test_shard_that_disappears_after_listing(corpus):
    shards = scan_shards(str(corpus))
    (corpus / "part-00001.parquet").unlink()
    with pytest.raises(BadData, match="part-00001.parquet: the file disappeared after it was listed"):
        list(token_stream(shards, TokenizerConfig()))
    skipped: dict = {}
    got = list(token_stream(shards, TokenizerConfig(), on_bad="skip", skipped=skipped))
    assert [t is None for _, _, t in got] == [False] * 3 + [True] * 3
    assert skipped == {"vanished_row_groups": 3}


def test_a_rewritten_shard_is_not_served_from_the_token_cache(corpus, tmp_path):
    """Guards: the token cache keyed without the shard's footer hash (a shard rewritten in place,
    same name and row counts, would be trained from the ids cached for the old file). The rows of
    one shard are shuffled (same words, so the same vocabulary and cache directory): a run with the
    old cache must equal a run with an empty one, bit for bit."""
    cache = tmp_path / "cache"
    ok(train(corpus, tmp_path / "a", "--cache-dir", str(cache)), tmp_path / "a")
    shard = corpus / "part-00001.parquet"
    rows = pq.read_table(shard).column("text").to_pylist()
    pq.write_table(pa.table({"text": rows[::-1]}), shard, row_group_size=500)
    ok(train(corpus, tmp_path / "b", "--cache-dir", str(cache)), tmp_path / "b")
    ok(train(corpus, tmp_path / "c", "--cache-dir", str(tmp_path / "fresh")), tmp_path / "c")
    assert (tmp_path / "b" / "vectors.npy").read_bytes() == (tmp_path / "c" / "vectors.npy").read_bytes()
    assert (tmp_path / "a" / "vectors.npy").read_bytes() != (tmp_path / "b" / "vectors.npy").read_bytes()


def test_rows_of_one_word_train_nothing_and_say_so(corpus, tmp_path):
    """A corpus of one word per row has no context anywhere: the run ends, as gensim's does, but
    says that its vectors are their random start instead of ending "done" alone."""
    d = tmp_path / "words"
    d.mkdir()
    words = [w for w in " ".join(gcide_lines(600)).split() if w.isalpha()][:6000]
    pq.write_table(pa.table({"text": words}), d / "part-00000.parquet")
    p = train(d, tmp_path / "r1")
    assert p.returncode == 0, p.stderr
    warned = [line for line in p.stderr.splitlines() if "trained no examples" in line]
    assert len(warned) == 1 and "one word per row" in warned[0], p.stderr
    summary = json.loads((tmp_path / "r1" / "summary.json").read_text())
    assert summary["examples_this_session"] == 0 and summary["words"] > 0
    p = train(corpus, tmp_path / "r2")  # rows of text: examples, and no such line
    assert p.returncode == 0 and "trained no examples" not in p.stderr, p.stderr
    assert json.loads((tmp_path / "r2" / "summary.json").read_text())["examples_this_session"] > 0
