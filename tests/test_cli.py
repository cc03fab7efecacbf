"""The whole pipeline through the real entry point (`python -m w2v_dist`), on real files."""

from __future__ import annotations

import io
import json
import logging
import os
import pickletools
import re
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from tests.conftest import DATA, cli, gcide_lines, plain_lines, shared_file, write_shards
from w2v_dist.cli import setup_logging

TRAIN = ["--epochs", "2", "--dim", "32", "--min-count", "3", "--log-every", "0.5", "--workers", "1"]


@pytest.fixture(scope="module")
def trained(small_corpus, tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "r1"
    p = cli("train", str(small_corpus), "--output", str(run), *TRAIN)
    return run, p


def test_train_writes_a_complete_run(trained):
    run, p = trained
    for name in ("config.json", "vocab/vocab.json", "vocab/counts.npy", "vocab/keep_prob.npy", "vocab/neg_prob.npy",
                 "vocab/neg_alias.npy", "vocab/word_offsets.npy", "vocab/word_bytes.npy", "metrics.jsonl",
                 "vectors.npy", "summary.json"):
        assert (run / name).exists(), name
    config = json.loads((run / "config.json").read_text())
    assert config["dim"] == 32 and config["alpha"] == 0.025 and config["model"] == "sg"
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["progress"] == pytest.approx(1.0)
    assert metrics[0]["loss"] > metrics[-1]["loss"], "the loss went down"
    assert all(m["lr"] <= 0.025 for m in metrics) and metrics[-1]["lr"] < 0.002
    vectors = np.load(run / "vectors.npy")
    vocab = json.loads((run / "vocab/vocab.json").read_text())
    assert vectors.shape == (vocab["size"], 32) and np.isfinite(vectors).all()
    assert "words/s" in p.stderr and "loss" in p.stderr  # one plain log line per interval (not a TTY)


def test_checkpoint_holds_cpu_tensors_only(trained):
    run, _ = trained
    (ckpt,) = (run / "checkpoints").iterdir()
    manifest = json.loads((ckpt / "manifest.json").read_text())
    assert set(manifest["files"]) == {"model.pt", "state.json"}
    state = torch.load(ckpt / "model.pt", weights_only=True)  # no map_location: must not need a GPU
    assert set(state) == {"in_embed", "out_embed"} and all(t.device.type == "cpu" for t in state.values())
    np.testing.assert_array_equal(state["in_embed"].numpy(), np.load(run / "vectors.npy"))
    # every storage in the pickle is tagged "cpu": torch restores storages to their saved device
    with zipfile.ZipFile(ckpt / "model.pt") as z:
        pkl = z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))
    assert _storage_locations(pkl) == {"cpu"}


def _storage_locations(pkl: bytes) -> set[str]:
    """The location strings torch wrote for each storage (persistent ids: ('storage', type, key, location, n))."""
    strings = [arg for op, arg, _ in pickletools.genops(io.BytesIO(pkl)) if op.name in ("BINUNICODE", "SHORT_BINUNICODE")]
    return {s for s in strings if s == "cpu" or s.startswith("cuda")}


def test_checkpoint_written_from_cuda_tensors_loads_on_cpu(tmp_path, monkeypatch):
    """Simulate a GPU run on a CPU-only machine: the tensors handed to checkpoint.save report a
    CUDA device; what is written must still be CPU storages that load without map_location."""
    from w2v_dist import checkpoint

    class FakeCuda(torch.Tensor):  # claims to live on cuda:0; .to("cpu") gives a plain tensor
        @property
        def device(self):
            return torch.device("cuda:0")

        def to(self, *args, **kwargs):
            return self.as_subclass(torch.Tensor).clone()

    t = torch.arange(6.0).reshape(2, 3).as_subclass(FakeCuda)
    assert t.device.type == "cuda"
    checkpoint.save(str(tmp_path), 7, {"in_embed": t, "out_embed": t}, {"step": 7})
    pt = tmp_path / "checkpoints" / "step-7" / "model.pt"
    loaded = torch.load(pt, weights_only=True)
    assert type(loaded["in_embed"]) is torch.Tensor and loaded["in_embed"].device.type == "cpu"
    with zipfile.ZipFile(pt) as z:
        pkl = z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))
    assert _storage_locations(pkl) == {"cpu"}
    tensors, state = checkpoint.load(str(tmp_path), 7)
    assert state["step"] == 7 and torch.equal(tensors["out_embed"], torch.arange(6.0).reshape(2, 3))


def test_export_both_formats_load_in_gensim(trained, tmp_path):
    gensim = pytest.importorskip("gensim")
    run, _ = trained
    ours = np.load(run / "vectors.npy")
    for fmt, name, binary in (("word2vec-binary", "v.bin", True), ("word2vec", "v.txt", False)):
        out = tmp_path / name
        cli("export", str(run), "--format", fmt, "--output", str(out))
        kv = gensim.models.KeyedVectors.load_word2vec_format(str(out), binary=binary)
        assert kv.vectors.shape == ours.shape
        np.testing.assert_allclose(kv.vectors, ours, rtol=1e-5, atol=1e-6)
    cli("export", str(run), "--format", "npy", "--output", str(tmp_path / "v.npy"))
    np.testing.assert_array_equal(np.load(tmp_path / "v.npy"), ours)
    assert (tmp_path / "v.vocab.txt").read_text().splitlines()[0].split(" ")[0] == kv.index_to_key[0]


def test_eval_and_similar(trained, tmp_path):
    run, _ = trained
    shared_file(DATA / "questions-words.txt")
    cli("export", str(run), "--format", "word2vec-binary", "--output", str(tmp_path / "v.bin"))
    p = cli("eval", str(tmp_path / "v.bin"), "--analogies", str(DATA / "questions-words.txt"),
            "--similarity", str(DATA / "wordsim353.tsv"), "--json")
    res = json.loads(p.stdout)
    (an,) = res["analogies"].values()
    (sim,) = res["similarity"].values()
    assert 0 <= an["accuracy"] <= 1 and an["oov"] > 0
    assert -1 <= sim["spearman"] <= 1
    table = cli("eval", str(run), "--similarity", str(DATA / "wordsim353.tsv")).stdout
    assert "spearman" in table.lower()
    p = cli("similar", str(run), "water", "--top", "5")
    lines = p.stdout.strip().splitlines()
    assert len(lines) == 5 and all(len(line.split("\t")) == 2 for line in lines)
    assert "water" not in [line.split("\t")[0] for line in lines]
    # gensim's restrict_vocab: only the 100 most frequent words are searched (the API had it, the CLI not)
    from w2v_dist.vectors import Vectors

    vectors = Vectors.load(str(run))
    p = cli("similar", str(run), "water", "--top", "5", "--restrict-vocab", "100")
    got = [line.split("\t")[0] for line in p.stdout.strip().splitlines()]
    assert got == [w for w, _ in vectors.most_similar("water", topn=5, restrict_vocab=100)]
    assert all(vectors.index(w) < 100 for w in got)


def test_same_command_same_vectors(tmp_path):
    """--seed makes a run repeatable (the chunk order depends on --workers, so it is part of "same");
    4 kernel threads on a 2-core machine: the merge order, not the scheduling, decides the bits.
    (5k lines: 4 threads on 2 cores wait at every step's barrier, and 20k lines took 18 s a run.)"""
    corpus = write_shards(tmp_path / "corpus", gcide_lines(5_000))
    args = [*TRAIN, "--epochs", "1", "--workers", "2", "--threads", "4", "--slice-words", "256"]
    cli("train", str(corpus), "--output", str(tmp_path / "a"), *args)
    cli("train", str(corpus), "--output", str(tmp_path / "b"), *args)
    np.testing.assert_array_equal(np.load(tmp_path / "a/vectors.npy"), np.load(tmp_path / "b/vectors.npy"))
    cli("train", str(corpus), "--output", str(tmp_path / "c"), *args, "--seed", "2")
    assert not np.array_equal(np.load(tmp_path / "a/vectors.npy"), np.load(tmp_path / "c/vectors.npy"))


def test_replicas_train_repeatably_and_apart_from_one_table(tmp_path):
    """``--replicas 2``: two copies of the tables, a kernel thread each, averaged every
    --sync-every steps. The same command gives the same bits; the vectors are not one table's (the
    replicas really trained apart), and the run says what it did."""
    corpus = write_shards(tmp_path / "corpus", gcide_lines(5_000))
    args = [*TRAIN, "--epochs", "1", "--batch-words", "2000", "--sync-every", "3"]
    runs, said = {}, {}
    for name, extra in (("a", ["--replicas", "2"]), ("b", ["--replicas", "2"]), ("one", ["--threads", "1"])):
        said[name] = cli("train", str(corpus), "--output", str(tmp_path / name), *args, *extra).stderr
        runs[name] = np.load(tmp_path / name / "vectors.npy")
    assert "kernel: 2 replicas of the tables, one thread each, at 2 x the rate, averaged every 3 steps" in said["a"]
    np.testing.assert_array_equal(runs["a"], runs["b"])
    assert not np.array_equal(runs["a"], runs["one"])
    summary = json.loads((tmp_path / "a/summary.json").read_text())
    assert summary["threads"] == 2 and np.isfinite(summary["final_loss"])


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 CPUs")
def test_two_replicas_by_default_on_two_to_four_cores(tmp_path):
    """``--replicas 0`` (the default) trains two replicas on a process with 2 to 4 cores where
    nothing asked for threads, and one table on one core or with ``--threads``: the same bits as
    the explicit flags, and the run says which it chose."""
    corpus = write_shards(tmp_path / "corpus", gcide_lines(4_000))
    args = [*TRAIN, "--epochs", "1", "--batch-words", "2000", "--sync-every", "3"]
    two = set(sorted(os.sched_getaffinity(0))[:2])
    runs, said = {}, {}
    for name, cpus, extra in (("auto2", two, []), ("replicas2", two, ["--replicas", "2"]),
                              ("auto1", set(sorted(two)[:1]), []), ("threads1", two, ["--threads", "1"]),
                              ("one", two, ["--replicas", "1"])):
        said[name] = cli("train", str(corpus), "--output", str(tmp_path / name), *args, *extra, cpus=cpus).stderr
        runs[name] = np.load(tmp_path / name / "vectors.npy")
    assert "kernel: 2 replicas of the tables (--replicas 0: 2 cores), one thread each" in said["auto2"]
    np.testing.assert_array_equal(runs["auto2"], runs["replicas2"])
    for name in ("auto1", "threads1"):
        assert "replicas of the tables" not in said[name] and "kernel: 1 thread" in said[name]
        np.testing.assert_array_equal(runs[name], runs["one"])
    assert not np.array_equal(runs["auto2"], runs["one"])
    assert json.loads((tmp_path / "auto2/summary.json").read_text())["replicas"] == 2
    assert json.loads((tmp_path / "auto1/summary.json").read_text())["replicas"] == 1


def test_default_replicas_fall_back_to_one_table_where_two_do_not_fit():
    """The default never refuses a run that one table can train: where two replicas' two more
    copies of the tables exceed the memory available, ``--replicas 0`` trains one table (an
    explicit ``--replicas 2`` is refused by the memory check instead); and where ``--alpha`` is
    above 0.1, where a replica could not train at twice the rate. On 2 CPUs, as CI has."""
    from w2v_dist.config import TrainConfig
    from w2v_dist.distributed import Dist
    from w2v_dist.training import memory_need, resolve_replicas

    cfg, dist, V = TrainConfig(corpus="c", output="o", dim=100), Dist(), 10_000
    one, two = memory_need(cfg, dist, V, 1), memory_need(cfg, dist, V, 2)
    assert one == 3 * V * 100 * 4 and two == one + 2 * V * 100 * 4
    before = os.sched_getaffinity(0)
    if len(before) < 2:
        pytest.skip("needs 2 CPUs")
    os.sched_setaffinity(0, set(sorted(before)[:2]))
    try:
        assert resolve_replicas(cfg, dist) == 2
        assert resolve_replicas(cfg, dist, V, free=two) == 2
        assert resolve_replicas(cfg, dist, V, free=two - 1) == 1
        assert resolve_replicas(cfg, dist, V, free=None) == 2  # memory not readable: by the cores
        # above 0.1, two replicas could not train at twice the rate (0.2 per update at most)
        assert resolve_replicas(TrainConfig(corpus="c", output="o", dim=100, alpha=0.1), dist) == 2
        assert resolve_replicas(TrainConfig(corpus="c", output="o", dim=100, alpha=0.15), dist) == 1
        cfg.replicas = 2
        assert resolve_replicas(cfg, dist, V, free=0) == 2
    finally:
        os.sched_setaffinity(0, before)


def test_cbow_and_list_column(tmp_path):
    lines = gcide_lines(6000)
    toks = [line.lower().split() for line in lines]
    tmp_path.joinpath("c").mkdir()
    pq.write_table(pa.table({"tokens": toks}), tmp_path / "c" / "part-00000.parquet", row_group_size=1000)
    cli("train", str(tmp_path / "c"), "--output", str(tmp_path / "r"), "--model", "cbow", "--text-column", "tokens",
        *TRAIN)
    summary = json.loads((tmp_path / "r/summary.json").read_text())
    assert summary["model"] == "cbow" and summary["words"] > 0
    assert json.loads((tmp_path / "r/config.json").read_text())["alpha"] == 0.05


def test_refuses_to_overwrite_a_finished_run(trained, small_corpus):
    run, _ = trained
    before = (run / "vectors.npy").read_bytes()
    p = cli("train", str(small_corpus), "--output", str(run), *TRAIN, check=False)
    assert p.returncode == 2
    assert p.stderr.strip() == f"w2v-dist: error: {run}: holds a finished run; pass --overwrite to replace it or choose another --output"
    assert (run / "vectors.npy").read_bytes() == before


def _write(path: Path, table: pa.Table) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path / "part-00000.parquet")
    return path


@pytest.mark.parametrize("case, extra, expect", [
    ("missing", [], "no such file or directory"),
    ("glob", [], "no Parquet files found"),
    ("no_column", [], "no column 'text' (columns: body); pass --text-column NAME"),
    ("wrong_type", [], "column 'text' has type int64, expected string or list<string>"),
    ("empty", [], "the corpus is empty"),
    ("rare", ["--min-count", "50"], "the vocabulary is empty"),
    ("ok", ["--window", "0"], "--window must be a positive integer, got 0"),
    ("ok", ["--dim", "0"], "--dim must be a positive integer, got 0"),
    ("ok", ["--dim", "-3"], "--dim must be a positive integer, got -3"),
    ("ok", ["--negative", "-1"], "--negative must be >= 1"),
    ("ok", ["--epochs", "0"], "--epochs must be a positive integer"),
    ("ok", ["--sample", "-1"], "--sample must be >= 0"),
    ("ok", ["--sample", "nan"], "--sample must be a finite number, got nan"),
    ("ok", ["--alpha", "inf"], "--alpha must be a finite number, got inf"),
    ("ok", ["--min-alpha", "nan"], "--min-alpha must be a finite number, got nan"),
    ("ok", ["--slice-words", "-1"], "--slice-words must be >= 0 (0: 1,024 / --threads, at least 64), got -1"),
    ("ok", ["--output-storage-options", "[1]"], "--output-storage-options must be a JSON object"),
])
def test_bad_input_is_one_clear_line_before_training(tmp_path, case, extra, expect):
    corpus = {
        "missing": lambda: tmp_path / "nope",
        "glob": lambda: tmp_path / "*.parquet",
        "no_column": lambda: _write(tmp_path / "c", pa.table({"body": ["a b c"]})),
        "wrong_type": lambda: _write(tmp_path / "c", pa.table({"text": [1, 2, 3]})),
        "empty": lambda: _write(tmp_path / "c", pa.table({"text": pa.array([], pa.string())})),
        "rare": lambda: _write(tmp_path / "c", pa.table({"text": ["a b c d e f"] * 3})),
        "ok": lambda: _write(tmp_path / "c", pa.table({"text": ["a b c d e f"] * 10})),
    }[case]()
    out = tmp_path / "run"
    p = cli("train", str(corpus), "--output", str(out), *extra, check=False)
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("w2v-dist: error: ") and expect in lines[0], p.stderr
    assert not (out / "summary.json").exists() and not (out / "config.json").exists()


def test_divergence_stops_the_run(small_corpus, tmp_path):
    """Guards: a run whose loss explodes ending "done" with useless vectors. An absurd --alpha
    diverges; the run stops with one line naming the step and what to change, exit code 3, no
    vectors, no summary, and no checkpoint of the diverged tables (the one before stays)."""
    run = tmp_path / "r"
    p = cli("train", str(small_corpus), "--output", str(run), *TRAIN, "--alpha", "1", "--sample", "0",
            "--checkpoint-every", "1", "--batch-words", "2000", check=False)
    assert p.returncode == 3, p.stderr
    errors = [line for line in p.stderr.splitlines() if "error" in line.lower() or "Traceback" in line]
    assert len(errors) == 1 and errors[0].startswith("w2v-dist: error: training diverged at step "), p.stderr
    assert "Lower --alpha (now 1)" in errors[0]
    step = int(errors[0].split("at step ")[1].split()[0])
    assert not (run / "summary.json").exists() and not (run / "vectors.npy").exists()
    saved = sorted(int(c.name.split("-")[1]) for c in (run / "checkpoints").iterdir()) if (run / "checkpoints").exists() else []
    assert all(s < step for s in saved), (saved, step)
    # what to do next follows from whether there is a checkpoint to go on from (it was said either way)
    assert errors[0].endswith("run again with --overwrite, or --force-resume to go on from the last checkpoint"
                              if saved else "no checkpoint was written yet. Lower --alpha (now 1) and run again with "
                              "--overwrite"), errors[0]
    p = cli("train", str(small_corpus), "--output", str(tmp_path / "none"), *TRAIN, "--alpha", "1", "--sample", "0",
            "--batch-words", "2000", "--log-every", "0", check=False)
    assert p.returncode == 3 and p.stderr.strip().splitlines()[-1].endswith(
        "no checkpoint was written yet. Lower --alpha (now 1) and run again with --overwrite"), p.stderr[-2000:]
    # metrics.jsonl stays strict JSON: a loss that is not finite is null (was NaN)
    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")
    records = [json.loads(line, parse_constant=refuse)
               for line in (tmp_path / "none" / "metrics.jsonl").read_text().splitlines()]
    assert records and any(r["loss"] is None for r in records), records[-3:]


@pytest.mark.parametrize("model", ["sg", "cbow"])
def test_many_threads_stay_stable_on_a_tiny_vocabulary(tmp_path, model):
    """Guards: threads' summed changes of the frequent rows overshooting. Every row of a 50-word
    vocabulary without subsampling saturates within any slice; with the changes of a step simply
    added, 4 or more threads diverged here (loss 4.2 -> 15 to 19,000 at steps 4-6, skip-gram and
    CBOW, slices of 256 to 1,024 words). Merged by their contraction, 8 threads train as one does."""
    lines = plain_lines(60_000)
    top = {w for w, _ in Counter(w for line in lines for w in line.split()).most_common(50)}
    corpus = write_shards(tmp_path / "tiny", [t for t in (" ".join(w for w in line.split() if w in top)
                                                          for line in lines) if t])
    loss = {}
    for threads in (1, 8):
        run = tmp_path / f"t{threads}"
        p = cli("train", str(corpus), "--output", str(run), "--model", model, "--epochs", "3", "--sample", "0",
                "--threads", str(threads), "--workers", "0", check=False)
        assert p.returncode == 0, p.stderr
        assert f"kernel: {threads} thread" in p.stderr
        summary = json.loads((run / "summary.json").read_text())
        assert summary["slice_words"] == (1024 if threads == 1 else 128)
        loss[threads] = summary["final_loss"]
    assert loss[8] < 1.1 * loss[1], loss


@pytest.mark.parametrize("cores,ranks,expect", [(1, 1, 1), (2, 1, 1), (3, 1, 1), (4, 1, 3), (16, 1, 15),
                                                (6, 2, 1), (8, 2, 3), (16, 4, 3)])
def test_default_threads_leave_the_reader_a_core_and_are_never_two(monkeypatch, cores, ranks, expect):
    """Guards: ``--threads 0`` giving 2 kernel threads (a 3-core machine, or 6 cores for 2 ranks).
    2 deterministic threads do 2.0-2.7x one thread's work (docs/training.md), so on 2 cores they
    are never faster than one; one thread, and the reader, get the cores instead."""
    from w2v_dist import training

    monkeypatch.setattr(training, "_cores", lambda: cores)
    assert training.default_threads(ranks) == expect


def test_token_cache_changes_nothing_but_the_reading(small_corpus, tmp_path):
    """Guards: the node-local cache of encoded units serving other ids than the text would give
    (a stale or wrong entry), or not being used. Two epochs with the cache (its files appear) and
    without (--token-cache-gb 0): the same vectors, bit for bit."""
    args = [*TRAIN, "--workers", "0", "--threads", "2"]
    cache = tmp_path / "cache"
    cli("train", str(small_corpus), "--output", str(tmp_path / "a"), *args, "--cache-dir", str(cache))
    cli("train", str(small_corpus), "--output", str(tmp_path / "b"), *args, "--token-cache-gb", "0",
        "--cache-dir", str(tmp_path / "nocache"))
    assert len(list(cache.glob("tokens-*/*.npz"))) >= 2
    assert not list((tmp_path / "nocache").glob("tokens-*"))
    np.testing.assert_array_equal(np.load(tmp_path / "a/vectors.npy"), np.load(tmp_path / "b/vectors.npy"))


def test_reader_processes_log_as_the_trainer_does(small_corpus, tmp_path):
    """A reader process (``--workers 1``, started by ``spawn``) whose token cache cannot be written
    (--cache-dir is a file) warns in the trainer's format: time, level, message, and the run goes
    on. Guards: a reader started bare, whose warnings came out as a bare message through logging's
    last resort (and whose INFO lines were lost)."""
    (tmp_path / "afile").write_text("not a directory\n")
    p = cli("train", str(small_corpus), "--output", str(tmp_path / "r"), *TRAIN, "--workers", "1",
            "--cache-dir", str(tmp_path / "afile"))
    lines = [line for line in p.stderr.splitlines() if "not caching more" in line]
    assert lines and all(re.match(r"\d\d:\d\d:\d\d WARNING token cache .*afile", line) for line in lines), p.stderr
    assert (tmp_path / "r" / "vectors.npy").exists()


@pytest.mark.parametrize("level, quiet, ours, others", [
    ("info", False, logging.INFO, logging.WARNING), ("debug", False, logging.DEBUG, logging.DEBUG),
    ("warning", False, logging.WARNING, logging.WARNING), ("error", False, logging.ERROR, logging.ERROR),
    ("info", True, logging.WARNING, logging.WARNING),  # -q, or a rank other than 0
])
def test_log_level_is_ours_other_libraries_log_warnings(monkeypatch, level, quiet, ours, others):
    """Guards: the root logger at INFO, which let azure-core print every HTTP request and response
    into the training log (the end-to-end count is in test_object_stores.py)."""
    root, pkg = logging.getLogger(), logging.getLogger("w2v_dist")
    monkeypatch.setattr(root, "handlers", [])  # basicConfig acts only on a root without handlers
    monkeypatch.setattr(root, "level", root.level)
    monkeypatch.setattr(pkg, "level", pkg.level)
    setup_logging(level, quiet, rank=0, world=1)
    assert logging.getLogger("w2v_dist.train").getEffectiveLevel() == ours
    assert logging.getLogger("azure.core.pipeline.policies.http_logging_policy").getEffectiveLevel() == others


def test_text_columns_in_every_type_a_parquet_writer_gives_them_train_alike(tmp_path):
    """pandas writes a categorical column as dictionary<string>, Polars its strings as string_view,
    Spark and others large_string and lists of any of them. Every one is read as the same strings:
    one family of vectors for the text, one for the lists of tokens. Guards: such a column refused
    as 'expected string or list<string>' (dictionary and string_view were), or tokenized as
    something else than its strings."""
    lines = plain_lines(3_000)
    tokens = [line.split() for line in lines]
    dictionary = pa.dictionary(pa.int32(), pa.string())
    kinds = {"string": pa.array(lines), "large_string": pa.array(lines, pa.large_string()),
             "dictionary": pa.array(lines).dictionary_encode(),
             "list": pa.array(tokens, pa.list_(pa.string())),
             "large_list<large_string>": pa.array(tokens, pa.large_list(pa.large_string())),
             "list<dictionary>": pa.array(tokens).cast(pa.list_(dictionary))}
    if hasattr(pa, "string_view"):  # pyarrow 16 and later
        kinds["string_view"] = pa.array(lines, pa.string_view())
        kinds["list<string_view>"] = pa.array(tokens, pa.list_(pa.string_view()))
    vectors = {}
    for name, column in kinds.items():
        corpus = tmp_path / name.replace("<", "-").replace(">", "")
        corpus.mkdir()
        pq.write_table(pa.table({"text": column}), corpus / "part-00000.parquet")
        assert pq.read_schema(corpus / "part-00000.parquet").field("text").type == column.type
        run = tmp_path / f"run-{corpus.name}"
        cli("train", str(corpus), "--output", str(run), "--epochs", "1", "--dim", "16", "--min-count", "3",
            "--workers", "0", "--threads", "1")
        vectors[name] = np.load(run / "vectors.npy")
    for name, v in vectors.items():
        same = vectors["list" if "list" in name else "string"]
        assert np.array_equal(v, same), name


def test_a_wait_for_data_that_is_the_readers_start_is_said_as_such(small_corpus, tmp_path):
    """A small run with --workers 2 waits mostly for its first chunk: two reader processes
    starting (spawned, importing torch). Guards: that wait said as a reader that fell behind,
    with the advice of more --workers, which made it longer (1.5 s at 1 worker, 3.4 s at 3)."""
    run = tmp_path / "r"
    p = cli("train", str(small_corpus), "--output", str(run), "--epochs", "1", "--dim", "16", "--workers", "2",
            "--threads", "1", "--replicas", "1")
    s = json.loads((run / "summary.json").read_text())
    assert 0 < s["reader_first_wait_s"] <= s["reader_wait_s"], s
    said = [line for line in p.stderr.splitlines() if "training waited for data" in line]
    if 2 * s["reader_first_wait_s"] >= s["reader_wait_s"] >= 1.0 and s["reader_wait_s"] >= 0.1 * s["elapsed_s"]:
        assert len(said) == 1 and "for the first chunk: the reader's start (--workers 2: 2 processes" in said[0], said
    assert not any("fell behind" in line for line in said) or 2 * s["reader_first_wait_s"] < s["reader_wait_s"], said


def _on_a_terminal(args: list[str], env: dict | None = None) -> str:
    """The CLI with stderr on a pseudo-terminal (where the tqdm bar is drawn): what it printed there."""
    import fcntl
    import pty
    import struct
    import subprocess
    import sys
    import termios

    from tests.conftest import ROOT

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 100, 0, 0))  # 40 rows of 100 columns
    p = subprocess.Popen([sys.executable, "-m", "w2v_dist", *args], stdout=subprocess.DEVNULL, stderr=follower,
                         cwd=ROOT, env={**os.environ, "COLUMNS": "100", **(env or {})})
    os.close(follower)
    out = b""
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        out += data
    p.wait(timeout=120)
    os.close(leader)
    return out.decode("utf-8", "replace")


def test_the_bar_on_a_terminal_keeps_log_lines_apart_and_closes_before_a_stop(small_corpus, tmp_path):
    """Guards: a warning written into the bar's line ('0%|...| 0.00/128k [...]02:50:45 WARNING ...'),
    the bar's last state printed after 'stopped by SIGTERM', and -q drawing the bar."""
    args = ["train", str(small_corpus), "--output", str(tmp_path / "r"), "--dim", "16", "--epochs", "1",
            "--threads", "1", "--batch-words", "1000", "--workers", "0"]
    out = _on_a_terminal(args, env={"W2V_DIST_FAULT": "term@step:0:5"})
    lines = out.replace("\r\n", "\n").split("\n")
    stopped = [i for i, line in enumerate(lines) if "WARNING stopped by SIGTERM at step" in line]
    assert len(stopped) == 1 and re.match(r"(\r|\x1b\[A)*\d\d:\d\d:\d\d WARNING", lines[stopped[0]].lstrip("\r ")), out
    assert "word/s" not in "\n".join(lines[stopped[0]:]), out  # no bar after the stop
    assert "word/s" in out  # the bar was drawn before it
    quiet = _on_a_terminal(["-q", *args[:2], "--output", str(tmp_path / "q"), *args[4:]])
    assert "word/s" not in quiet and (tmp_path / "q" / "summary.json").exists(), quiet
