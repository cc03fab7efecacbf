"""``prepare`` commits its output as a whole; damaged and non-text input is refused in one line.

Guards: a failed or interrupted ``prepare`` leaving complete-looking shards that ``train`` then
uses without a word; a truncated or non-gzip ``.gz`` escaping as a raw EOFError/BadGzipFile
traceback that names no file; 2 MB of random bytes becoming a vocabulary of U+FFFD fragments.
"""

from __future__ import annotations

import gzip
import json
import os
import random

import pyarrow.parquet as pq
import pytest

from tests.conftest import cli
from w2v_dist.corpus.shards import CorpusError, scan_shards
from w2v_dist.prepare import BLOCK_BYTES, PrepareError, prepare

TRAIN = ["--dim", "8", "--epochs", "1", "--threads", "1", "--min-count", "1"]


def one_error_line(p, code=2) -> str:
    """Exit ``code``, no traceback, and one line for the user, last (log lines may come before)."""
    assert p.returncode == code, p.stderr
    assert "Traceback" not in p.stderr, p.stderr
    lines = [line for line in p.stderr.splitlines() if line.startswith("w2v-dist: ")]
    assert len(lines) == 1 and lines[0] == p.stderr.strip().splitlines()[-1], p.stderr
    return lines[0]


def test_a_truncated_gz_is_one_line_and_its_output_is_refused(tmp_path):
    good = tmp_path / "a-good.txt.gz"
    good.write_bytes(gzip.compress(b"".join(b"good line %d\n" % i for i in range(100))))
    # more than one read block of text, so some lines come before the damage
    text = b"".join(b"line %d of a long file\n" % i for i in range(BLOCK_BYTES // 20))
    whole = gzip.compress(text, 1)
    bad = tmp_path / "b-bad.txt.gz"
    bad.write_bytes(whole[: len(whole) * 9 // 10])
    out = tmp_path / "out"

    line = one_error_line(cli("prepare", str(good), str(bad), "--output", str(out), check=False))
    assert f"{bad}: truncated or corrupt gzip data after line " in line and "--on-bad-input skip" in line
    # the good file's shard is not left looking finished: train refuses the directory, naming the fix
    assert not (out / "_SUCCESS").exists()
    line = one_error_line(cli("train", str(out), "--output", str(tmp_path / "r"), *TRAIN, check=False))
    assert "`w2v-dist prepare` did not finish here" in line and "--overwrite" in line and "--allow-incomplete" in line
    assert not (tmp_path / "r").exists()

    p = cli("prepare", str(good), str(bad), "--output", str(out), "--overwrite", "--on-bad-input", "skip")
    summary = json.loads(p.stdout)
    kept = int(line_reached(p.stderr))
    assert summary["bad_inputs"] == 1 and summary["rows"] == 100 + kept and 0 < kept < text.count(b"\n")
    rows = [r for f in sorted(out.glob("part-*.parquet")) for r in pq.read_table(f)["text"].to_pylist()]
    assert rows == [f"good line {i}" for i in range(100)] + [f"line {i} of a long file" for i in range(kept)]
    manifest = json.loads((out / "_SUCCESS").read_text())
    assert manifest["rows"] == len(rows) and not (out / "_PREPARING").exists()


def line_reached(stderr: str) -> str:
    (warning,) = [w for w in stderr.splitlines() if "--on-bad-input skip" in w]
    return warning.split("after line ")[1].split()[0]


def test_ctrl_c_leaves_an_unfinished_directory_that_train_refuses(tmp_path):
    src = tmp_path / "a.txt"
    src.write_text("".join(f"alpha beta gamma {i % 7}\n" for i in range(50)))
    out = tmp_path / "out"
    p = cli("prepare", str(src), "--output", str(out), "--rows-per-shard", "10",
            env={"W2V_DIST_FAULT": "int@prepare-shard:0:2"}, check=False)
    assert "prepare interrupted" in one_error_line(p, code=130)
    assert sorted(os.listdir(out)) == ["_PREPARING", "part-00000.parquet", "part-00001.parquet"]
    # (the CLI's refusal is checked above, for a failed prepare)
    with pytest.raises(CorpusError, match=r"did not finish here \(_PREPARING but no _SUCCESS: .* after 2 shard\(s\)\)"):
        scan_shards(str(out))
    cli("train", str(out), "--output", str(tmp_path / "r"), *TRAIN, "--allow-incomplete")
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["words"] == 20 * 4


def test_not_gzip_and_random_bytes_are_refused(tmp_path):
    fake = tmp_path / "fake.txt.gz"
    fake.write_bytes(b"plain text, not gzip\n")
    with pytest.raises(PrepareError, match=r"fake\.txt\.gz: truncated or corrupt gzip data at its start \(Not a gzipped"):
        prepare([str(fake)], str(tmp_path / "o1"), progress=False)

    noise = tmp_path / "noise.txt"
    noise.write_bytes(random.Random(0).randbytes(2 << 20))
    with pytest.raises(PrepareError, match=r"noise\.txt: \d+\.\d% of its 2097152 bytes are not UTF-8; .*--max-invalid-utf8"):
        prepare([str(noise)], str(tmp_path / "o2"), progress=False)
    assert not list((tmp_path / "o2").glob("*.parquet"))
    # a little bad UTF-8 in real text is replaced and counted, as before; the threshold is a flag
    s = prepare([str(noise)], str(tmp_path / "o3"), progress=False, max_invalid_utf8=1)
    assert s["replaced_utf8"] > 0 and s["invalid_utf8_bytes"] > 0.1 * (2 << 20)


def test_success_manifest_is_checked_and_other_tools_parquet_is_taken(tmp_path):
    (tmp_path / "a.txt").write_text("".join(f"w{i} x\n" for i in range(30)))
    out = tmp_path / "out"
    prepare([str(tmp_path / "a.txt")], str(out), rows_per_shard=10, progress=False)
    assert len(scan_shards(str(out))) == 3
    (out / "part-00001.parquet").unlink()
    with pytest.raises(CorpusError, match=r"1 shard\(s\) listed in _SUCCESS are missing \(part-00001\.parquet\)"):
        scan_shards(str(out))
    # Spark's empty _SUCCESS, or no marker at all: taken as they are
    (out / "_SUCCESS").write_text("")
    assert len(scan_shards(str(out))) == 2
    (out / "_SUCCESS").unlink()
    assert len(scan_shards(str(out))) == 2
