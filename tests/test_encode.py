"""`w2v-dist encode`: the corpus as token ids, and training on it equal to training on the text."""

from __future__ import annotations

import json
import shutil
import signal

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.conftest import PLAIN_TRAIN, cli, run_vocab
from tests.test_distributed import torchrun


@pytest.fixture(scope="module")
def encoded(plain_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("encoded") / "ids"
    p = cli("encode", str(plain_corpus), "--output", str(out), "--min-count", "3")
    return out, json.loads(p.stdout.strip().splitlines()[-1])


def test_every_row_becomes_its_in_vocabulary_words_as_ids(plain_corpus, encoded):
    """An oracle that shares no code with the tokenizer: plain_lines split on spaces."""
    out, printed = encoded
    words, counts = run_vocab(out)
    index = {w: i for i, w in enumerate(words)}
    assert printed["vocab_size"] == len(words) and printed["files"] == 3
    assert counts.min() >= 3 and (np.diff(counts) <= 0).all()
    manifest = json.loads((out / "encoded.json").read_text())
    for f in sorted(plain_corpus.glob("*.parquet")):
        text, ids = pq.ParquetFile(f), pq.ParquetFile(out / f.name)
        assert [text.metadata.row_group(g).num_rows for g in range(text.num_row_groups)] == \
               [ids.metadata.row_group(g).num_rows for g in range(ids.num_row_groups)]
        rows = text.read().column("text").to_pylist()
        assert ids.read().column("ids").to_pylist() == [[index[w] for w in r.split() if w in index] for r in rows]
        listed = next(x for x in manifest["files"] if x["name"] == f.name)
        assert sum(t for _, t in listed["row_tokens"]) == sum(len(r.split()) for r in rows)
    assert manifest["total_words"] == int(counts.sum())


def test_ranks_under_torchrun_write_what_one_process_writes(plain_corpus, encoded, tmp_path):
    """``torchrun ... -m w2v_dist encode``, 4 ranks for 3 files (one rank writes none): the ranks
    count and write their shares, and every file (ids, vocabulary, manifest) is byte for byte what
    one process wrote; rank 0 alone prints the summary. Guards: every rank doing the whole encode
    (N times the work, each rank removing what the others had written), a rank's files missing
    from the manifest, counts of one rank's share only."""
    one, printed = encoded
    out = tmp_path / "ids"
    p = torchrun("encode", str(plain_corpus), "--output", str(out), "--min-count", "3", nproc=4)
    assert [json.loads(line) for line in p.stdout.strip().splitlines()] == [{**printed, "output": str(out)}]
    files = sorted(f.relative_to(one) for f in one.rglob("*") if f.is_file())
    assert files == sorted(f.relative_to(out) for f in out.rglob("*") if f.is_file()) and len(files) > 4
    for f in files:
        assert (one / f).read_bytes() == (out / f).read_bytes(), f


def test_training_on_the_ids_equals_training_on_the_text(plain_run, encoded, tmp_path):
    """The same flags on the encoded corpus: the same vocabulary, examples and order, so the same
    vectors to the bit; and no vocabulary pass."""
    out, _ = encoded
    run = tmp_path / "run"
    p = cli("train", str(out), "--output", str(run), *PLAIN_TRAIN, "--workers", "2")
    assert "an encoded corpus" in p.stderr and "no vocabulary pass" in p.stderr
    assert np.array_equal(np.load(run / "vectors.npy"), np.load(plain_run / "vectors.npy"))
    assert run_vocab(run)[0] == run_vocab(plain_run)[0]
    summary, ref = (json.loads((r / "summary.json").read_text()) for r in (run, plain_run))
    assert (summary["words"], summary["steps"]) == (ref["words"], ref["steps"])


def test_two_ranks_on_the_ids_equal_two_ranks_on_the_text(two_ranks, encoded, tmp_path):
    out, _ = encoded
    run = tmp_path / "run"
    torchrun("train", str(out), "--output", str(run), *PLAIN_TRAIN, "--workers", "1")
    assert np.array_equal(np.load(run / "vectors.npy"), np.load(two_ranks / "vectors.npy"))


def test_a_smaller_vocabulary_is_a_prefix_of_the_encoded_one(plain_corpus, encoded, tmp_path):
    """--min-count above the encoding's, --max-vocab and the run's own --max-sentence-length: the
    same run as on the text."""
    out, _ = encoded
    args = ["--dim", "16", "--epochs", "1", "--min-count", "7", "--max-vocab", "500", "--max-sentence-length", "6",
            "--threads", "2", "--workers", "0"]
    a, b = tmp_path / "text", tmp_path / "ids"
    cli("train", str(plain_corpus), "--output", str(a), *args)
    cli("train", str(out), "--output", str(b), *args)
    assert len(run_vocab(b)[0]) == 500
    assert run_vocab(a)[0] == run_vocab(b)[0]
    assert np.array_equal(np.load(a / "vectors.npy"), np.load(b / "vectors.npy"))


def test_a_killed_run_on_the_ids_resumes_exactly(encoded, tmp_path):
    out, _ = encoded
    args = [*PLAIN_TRAIN, "--workers", "1", "--batch-words", "1000", "--checkpoint-every", "5"]
    a, b = tmp_path / "a", tmp_path / "b"
    cli("train", str(out), "--output", str(a), *args)
    p = cli("train", str(out), "--output", str(b), *args, check=False, env={"W2V_DIST_FAULT": "kill@step:0:23"})
    assert p.returncode == -signal.SIGKILL
    p = cli("train", str(out), "--output", str(b), *args)
    assert "resuming from" in p.stderr
    assert np.array_equal(np.load(a / "vectors.npy"), np.load(b / "vectors.npy"))


@pytest.mark.parametrize("flags, says", [
    (["--min-count", "2"], "was encoded with --min-count 3, so rarer words are not in it; train with --min-count 3"),
    (["--no-lowercase"], "--no-lowercase cannot change its tokens now"),
    (["--normalize", "NFKC"], "--normalize NFKC cannot change its tokens now"),
    (["--max-vocab-size", "5000"], "--max-vocab-size applies when counting"),
    (["--text-column", "body"], "--text-column body cannot change that"),  # was: ignored, silently
])
def test_flags_the_encoding_fixed_are_refused_in_one_line(encoded, tmp_path, flags, says):
    out, _ = encoded
    p = cli("train", str(out), "--output", str(tmp_path / "r"), *flags, check=False)
    assert p.returncode == 2 and says in p.stderr, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and not (tmp_path / "r").exists()


def test_encode_refuses_to_overwrite_and_train_refuses_a_changed_or_unfinished_encoding(plain_corpus, encoded, tmp_path):
    out, _ = encoded
    p = cli("encode", str(plain_corpus), "--output", str(out), check=False)
    assert p.returncode == 2 and "pass --overwrite" in p.stderr
    p = cli("encode", str(plain_corpus), "--output", str(plain_corpus), check=False)
    assert p.returncode == 2 and "is the corpus itself" in p.stderr
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    shutil.copy(plain_corpus / "part-00000.parquet", copy / "part-00001.parquet")  # text where ids were
    p = cli("train", str(copy), "--output", str(tmp_path / "r"), check=False)
    assert p.returncode == 2 and "part-00001.parquet: has no column 'ids'" in p.stderr, p.stderr
    shutil.copy(out / "part-00000.parquet", copy / "part-00001.parquet")  # ids, but of other rows
    p = cli("train", str(copy), "--output", str(tmp_path / "r"), check=False)
    assert p.returncode == 2 and "part-00001.parquet: is not the file `w2v-dist encode` wrote" in p.stderr, p.stderr
    (copy / "part-00001.parquet").unlink()
    p = cli("train", str(copy), "--output", str(tmp_path / "r"), check=False)
    assert p.returncode == 2 and "files `w2v-dist encode` wrote are missing" in p.stderr, p.stderr
    shutil.copy(out / "part-00001.parquet", copy / "part-00001.parquet")
    (copy / "encoded.json").unlink()  # as a killed encode leaves it
    p = cli("train", str(copy), "--output", str(tmp_path / "r"), check=False)
    assert p.returncode == 2 and "unfinished `w2v-dist encode`" in p.stderr, p.stderr


def test_a_run_and_an_encoded_corpus_never_share_a_directory(plain_corpus, plain_run, encoded, tmp_path):
    """Guards: encode --output into a finished run replacing its vocab/ (similar then named the
    vectors' rows with another corpus's words, or crashed), and train --output into an encoded
    corpus replacing the vocabulary its ids were encoded with; with --overwrite or without."""
    out, _ = encoded
    run = tmp_path / "run"
    shutil.copytree(plain_run, run)
    before = (run / "vocab" / "vocab.json").read_bytes()
    for extra in ([], ["--overwrite"]):
        p = cli("encode", str(plain_corpus), "--output", str(run), *extra, check=False)
        assert p.returncode == 2 and p.stderr.strip().splitlines()[-1] == (
            f"w2v-dist: error: --output {run}: holds a training run (config.json), not an encoded corpus; choose "
            "another directory"), p.stderr
        p = cli("train", str(plain_corpus), "--output", str(out), *extra, check=False)
        assert p.returncode == 2 and p.stderr.strip().splitlines()[-1] == (
            f"w2v-dist: error: {out}: holds an encoded corpus (`w2v-dist encode`), not a run; choose another "
            "--output"), p.stderr
    assert (run / "vocab" / "vocab.json").read_bytes() == before and not (out / "config.json").exists()


def test_an_encoded_corpus_inside_the_text_corpus_is_named(plain_corpus, encoded, tmp_path):
    """Every Parquet file under a corpus is read as its text, so an encoded corpus written inside
    it made train fail on its ids with 'its directory has no encoded.json: an unfinished encode',
    though it had one. encode now refuses such an --output (./ and a trailing / are the same
    place), and train names a nested encoded corpus that got there some other way."""
    out, _ = encoded
    copy = tmp_path / "text"
    shutil.copytree(plain_corpus, copy)
    p = cli("encode", str(copy), "--output", str(copy / "ids"), check=False)
    assert p.returncode == 2 and p.stderr.strip().splitlines()[-1] == (
        f"w2v-dist: error: --output {copy / 'ids'}: is inside the corpus {copy}, and every Parquet file under a "
        "corpus is read as its text: choose a directory outside it"), p.stderr
    assert not (copy / "ids").exists()
    p = cli("encode", str(copy), "--output", f"{copy}/./", check=False)
    assert p.returncode == 2 and "is the corpus itself" in p.stderr, p.stderr
    shutil.copytree(out, copy / "ids")
    p = cli("train", str(copy), "--output", str(tmp_path / "r"), check=False)
    assert p.returncode == 2 and p.stderr.strip().splitlines()[-1] == (
        f"w2v-dist: error: {copy / 'ids'}/part-00000.parquet: belongs to the encoded corpus in {copy / 'ids'}, "
        "which lies inside the corpus being read (every Parquet file under it is); train on that directory "
        "itself, or move it out"), p.stderr


def test_the_python_api_can_be_called_again_in_one_process(plain_corpus, tmp_path):
    """Guards: ``w2v_dist.train`` and ``w2v_dist.encode`` (the README's Python API) replaced by the
    modules of the same name once a first call imported them, so that a second call in the same
    process (a notebook) failed with "'module' object is not callable"."""
    import w2v_dist

    for i in range(2):
        manifest = w2v_dist.encode(str(plain_corpus), str(tmp_path / f"ids{i}"))
        summary = w2v_dist.train(str(tmp_path / f"ids{i}"), str(tmp_path / f"run{i}"), dim=8, epochs=1)
        assert manifest["raw_tokens"] > 0 and summary["words"] > 0
    assert callable(w2v_dist.train) and callable(w2v_dist.encode)
