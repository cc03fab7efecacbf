"""s3://, gs:// and az:// end to end against real emulators (tests/stores.py), with a fault-injecting
proxy (tests/flaky_proxy.py) between the clients and the store in every run.

One local-disk 2-rank run is the reference. Through each store: ``prepare`` into the bucket,
train 2 ranks reading it and writing the run there, interrupted (the store goes down for longer
than the client's retries on s3 and az; SIGTERM on gs, whose retry budget of ~30 s a request
cannot be shortened), then the same command resumes from the checkpoint in the store and ends in
the reference's vectors, bit for bit, although every n-th request met a 503, a 500, a reset
halfway through the body or a stall. ``export`` reads the run there and gensim loads the file.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import fsspec
import numpy as np
import pytest

from tests.conftest import ROOT, cli, gcide_lines
from tests.flaky_proxy import FlakyProxy
from tests.test_distributed import torchrun

# checkpoints every 5 steps of 1000 words; the ranks sync every row every step, so a checkpoint
# is written at exactly every 5th step
TRAIN = ["--epochs", "1", "--dim", "16", "--min-count", "3", "--threads", "1", "--batch-words", "1000",
         "--sync-every", "1", "--sync-rows", "8192", "--checkpoint-every", "5", "--log-every", "600"]
PREPARE = ["--rows-per-shard", "2000", "--rows-per-row-group", "500"]
# the clients' retries, shortened where the backend lets us, so an outage is found in seconds
# (docs/storage.md): botocore tries twice inside each of s3fs's 5 tries; the Azure SDK's default
# waits 18 s and more between its tries, set here through w2v_dist (adlfs does not pass them on)
RETRIES = {"s3": {"config_kwargs": {"retries": {"max_attempts": 2, "mode": "standard"}}},
           "gs": {},
           "az": {"retry_total": 3, "initial_backoff": 0.1, "increment_base": 0.5, "random_jitter_range": 0.1}}
# a fault every n-th request through the proxy: the two runs make 300-400, so each kind comes
# twice; fewer on gs, where gcsfs waits 1-2 s before each retry, whatever the options
EVERY = {"s3": 40, "gs": 60, "az": 40}
WAITED = "training waited for data"  # the line of a run bound by its input
# the manifest's upload is done: one PUT (S3), the block list's commit (Azure)
COMMITTED = {"s3": lambda path: "comp=" not in path, "az": lambda path: "comp=blocklist" in path}


@pytest.fixture(scope="module")
def corpus_txt(tmp_path_factory):
    path = tmp_path_factory.mktemp("text") / "corpus.txt"
    path.write_text("\n".join(gcide_lines(4000)) + "\n")
    return path


@pytest.fixture(scope="module")
def reference(corpus_txt, tmp_path_factory):
    """The 2-rank run on local disk that every store's run must equal: (run, its stderr)."""
    d = tmp_path_factory.mktemp("reference")
    cli("prepare", str(corpus_txt), "--output", str(d / "shards"), *PREPARE)
    p = torchrun("train", str(d / "shards"), "--output", str(d / "run"), *TRAIN)
    return d / "run", p.stderr


@pytest.fixture(params=["s3", "gs", "az"])
def store(request):
    return request.getfixturevalue(f"{request.param}_store")


def _fs(store):
    return fsspec.filesystem(store.root.split("://")[0], **store.options())


def test_prepare_train_resume_export_through_a_flaky_store(store, reference, corpus_txt, tmp_path):
    """Guards: a transient fault that fails the run or changes what it trains (a retried read
    must give the same bytes); an outage taken for bad data (skipped, or "pass --on-bad-shard"),
    shown as a traceback, or ending in SIGABRT; a checkpoint lost to it; another library's log
    in ours; a backend option (gs, az) that no test exercised."""
    gensim = pytest.importorskip("gensim")
    ref_run, ref_stderr = reference
    base = f"{store.root}/e2e"
    shards, run = f"{base}/shards", f"{base}/run"
    outage = store.name != "gs"
    manifest = "checkpoints/step-5/manifest.json"
    cli("prepare", str(corpus_txt), "--output", shards, *PREPARE, "--output-storage-options", json.dumps(store.options()))
    proxy = FlakyProxy(store.url, every=EVERY[store.name], delay=0.2, down_after=(
        lambda method, path: method == "PUT" and manifest in path and COMMITTED[store.name](path)) if outage else None)
    proxy.start()
    try:
        so = json.dumps(store.options(proxy.url) | RETRIES[store.name])
        cache = str(tmp_path / "cache")
        command = ("train", shards, "--output", run, *TRAIN, "--storage-options", so, "--cache-dir", cache)
        p = torchrun(*command, check=False, env=None if outage else {"W2V_DIST_FAULT": "term@step:0:7"})
        assert p.returncode != 0, p.stderr[-3000:]
        fs = _fs(store)
        root = run.split("://")[1]
        assert not fs.exists(f"{root}/summary.json")
        if outage:  # one line that names the object; the checkpoint written before is whole
            errors = [line for line in p.stderr.splitlines() if line.startswith("w2v-dist: error: ")]
            assert len(errors) == 1, p.stderr[-5000:]
            assert errors[0].startswith(f"w2v-dist: error: {store.root}/") or "abfs://w2v-test/" in errors[0], errors
            assert "the store did not answer" in errors[0] and "run the same command again" in errors[0], errors
            assert fs.exists(f"{root}/{manifest}"), proxy.log[-20:]
            proxy.come_back()
        else:
            assert "Run the same command to resume" in p.stderr, p.stderr[-3000:]
        p = torchrun(*command)
        assert f"resuming from {run}/checkpoints/step-" in p.stderr, p.stderr[-3000:]
    finally:
        proxy.stop()
    assert {"503", "500", "reset", "delay"} <= set(proxy.injected), (proxy.requests, proxy.injected)  # all were met

    fs.invalidate_cache()
    for name in ("config.json", "plan.json", "vocab", "checkpoints", "metrics.jsonl", "vectors.npy", "summary.json"):
        assert fs.exists(f"{root}/{name}"), name
    saved = fs.cat_file(f"{root}/config.json").decode() + "".join(
        fs.cat_file(f).decode() for f in fs.glob(f"{root}/checkpoints/*/state.json"))
    assert store.secret not in saved, "a credential was written into the run"
    with fs.open(f"{root}/vectors.npy", "rb") as f:
        vectors = np.load(f)
    assert np.array_equal(vectors, np.load(ref_run / "vectors.npy")), "vectors differ from the local run's"
    assert list((tmp_path / "cache").glob("vocab-*/counts.npy"))  # the remote vocabulary, mapped from one local copy

    # our log only: the reference's INFO lines and "resuming from" (azure-core alone printed
    # ~1,300 lines of HTTP requests and responses when every library logged at INFO), and at most
    # a warning a fault from the clients (Azure's "Incomplete download.")
    # (less the line a run waiting for data prints: the store's stalls can make one here)
    lines, ref_lines = ([line for line in stderr.strip().splitlines() if WAITED not in line]
                        for stderr in (p.stderr, ref_stderr))
    info = [line for line in lines if " INFO " in line or " DEBUG " in line]
    assert len(info) == len([line for line in ref_lines if " INFO " in line]) + 1, "\n".join(lines)
    assert len(lines) <= len(ref_lines) + 1 + sum(proxy.injected.values()), "\n".join(lines)

    cli("export", run, "--format", "word2vec-binary", "--output", str(tmp_path / "v.bin"), "--storage-options",
        json.dumps(store.options()))
    kv = gensim.models.KeyedVectors.load_word2vec_format(str(tmp_path / "v.bin"), binary=True)
    np.testing.assert_array_equal(kv.vectors, vectors)
    word = kv.index_to_key[10]  # the run in the store, queried with its options (no flag for them until 2026-11-27)
    p = cli("similar", run, word, "--top", "3", "--storage-options", json.dumps(store.options()))
    assert [line.split("\t")[0] for line in p.stdout.splitlines()] == [w for w, _ in kv.most_similar(word, topn=3)]


def test_corpus_and_run_on_different_stores(gs_store, az_store, reference, corpus_txt, tmp_path):
    """The corpus on gs:// with its options, the run on az:// with its own: the vocabulary
    equals the reference's (it is the same for any number of ranks and readers), file for file."""
    shards, run = f"{gs_store.root}/cross/shards", f"{az_store.root}/cross/run"
    gs, az = json.dumps(gs_store.options()), json.dumps(az_store.options())
    cli("prepare", str(corpus_txt), "--output", shards, *PREPARE, "--output-storage-options", gs)
    cli("train", shards, "--output", run, *TRAIN, "--storage-options", gs, "--output-storage-options", az,
        "--cache-dir", str(tmp_path / "cache"), "--workers", "1")  # a reader process, resolving both stores
    fs = _fs(az_store)
    assert fs.exists("w2v-test/cross/run/summary.json")
    for name in ("counts.npy", "word_bytes.npy", "word_offsets.npy", "neg_alias.npy"):
        assert fs.cat_file(f"w2v-test/cross/run/vocab/{name}") == (reference[0] / "vocab" / name).read_bytes(), name
    assert not _fs(gs_store).exists("w2v-test/cross/run")


def test_an_epoch_fetches_the_corpus_once(store, reference, corpus_txt, tmp_path):
    """Guards (issue 11, item 5): a row group cut into several units of a reader's list fetched
    once per unit (it was: 3x the corpus an epoch); a file's footer fetched again at every switch
    between files; s3fs's HEAD for the size of every file it opens (the manifest has it). Counted
    at the store, through the proxy, while the run's own reader streams one epoch."""
    from collections import Counter

    from w2v_dist.config import TokenizerConfig
    from w2v_dist.corpus.dataset import CorpusStream
    from w2v_dist.corpus.plan import make_units
    from w2v_dist.corpus.shards import scan_shards

    ref_run, _ = reference
    shards_uri = f"{store.root}/once/shards"
    cli("prepare", str(corpus_txt), "--output", shards_uri, *PREPARE, "--output-storage-options",
        json.dumps(store.options()))
    row_tokens = [[tuple(x) for x in s] for s in json.loads((ref_run / "plan.json").read_text())["row_tokens"]]
    groups = sum(len(s) for s in row_tokens)
    assert len(make_units(row_tokens, 1)) >= 2 * groups  # row groups are cut: the case that fetched them again

    def epoch(shards, options):
        stream = CorpusStream(shards, str(ref_run / "vocab"), TokenizerConfig(), seed=1, epochs=1,
                              storage_options=options, vocab_storage_options={}, row_tokens=row_tokens)
        return [c.tokens.ids for c in stream]

    proxy = FlakyProxy(store.url).start()
    try:
        options = store.options(proxy.url)
        shards = scan_shards(shards_uri, storage_options=options)  # the manifest, read before training
        start, before = len(proxy.log), proxy.body_bytes["GET"]
        ids = epoch(shards, options)
        fetched = proxy.body_bytes["GET"] - before
        requests = Counter(method for method, _, _ in proxy.log[start:])
    finally:
        proxy.stop()
    local = epoch(scan_shards(str(ref_run.parent / "shards")), None)
    assert all(np.array_equal(a, b) for a, b in zip(ids, local, strict=True))  # the same words, in the same order
    corpus = _fs(store).du(shards_uri.split("://")[1])
    # one GET a row group and one a file (its footer: pyarrow asks for the file's last 64 KiB,
    # all of these small files); before, the 4 pieces of every row group fetched it 4 times
    assert requests["GET"] <= groups + len(shards), requests
    assert fetched <= corpus + len(shards) * 64 * 1024, (fetched, corpus, requests)
    if store.name == "s3":  # the size came with the manifest
        assert requests["HEAD"] == 0, requests


def test_a_slow_store_is_said_as_the_training_waiting_for_data(s3_store, reference, corpus_txt, tmp_path):
    """Every request to the store answered 0.5 s late: the kernel outruns the reader, and the run
    says so in one line naming the reader and what speeds it up, and on the progress lines of the
    intervals it waited; summary.json has the seconds waited, metrics.jsonl each interval's share. Guards: a run bound by its input that looks like a slow kernel (nothing said), the
    wait not counted (the reader thread's queue), and under torchrun a rank's wait missing."""
    ref_run, _ = reference
    assert len(json.loads((ref_run / "summary.json").read_text())["rank_reader_wait_s"]) == 2  # each rank's
    shards = f"{s3_store.root}/slow/shards"
    cli("prepare", str(corpus_txt), "--output", shards, *PREPARE, "--output-storage-options",
        json.dumps(s3_store.options()))
    proxy = FlakyProxy(s3_store.url, every=1, faults=("delay",), delay=0.5).start()
    try:
        p = cli("train", shards, "--output", str(tmp_path / "run"), "--epochs", "1", "--dim", "16", "--min-count", "3",
                "--threads", "1", "--workers", "0", "--batch-words", "1000", "--log-every", "0.3",
                "--storage-options", json.dumps(s3_store.options(proxy.url)), "--cache-dir", str(tmp_path / "cache"))
    finally:
        proxy.stop()
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    # 8 row groups, each 0.5 s late (a run waiting less than a second is not told: INPUT_BOUND_S)
    assert summary["reader_wait_s"] >= max(0.3 * summary["elapsed_s"], 1.0), summary
    said = [line for line in p.stderr.splitlines() if WAITED in line]
    assert len(said) == 1, p.stderr[-3000:]
    assert "--workers 0: one thread" in said[0] and "--workers N" in said[0] and "w2v-dist encode" in said[0], said
    # and live: the progress lines of the intervals spent waiting, and metrics.jsonl's share of each
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert max(r["data_wait"] for r in records) >= 0.5, records
    assert any(" eta " in line and "waiting for data" in line for line in p.stderr.splitlines()), p.stderr[-3000:]


def test_an_encoded_corpus_on_a_store_trains_as_the_text_did(s3_store, reference, tmp_path):
    """`w2v-dist encode` from local shards to s3://, then 2 ranks train from there: the reference's
    vectors, bit for bit (encode writes its files through fsspec as prepare does)."""
    ref_run, _ = reference
    encoded, opts = f"{s3_store.root}/encoded", json.dumps(s3_store.options())
    cli("encode", str(ref_run.parent / "shards"), "--output", encoded, "--min-count", "3",
        "--output-storage-options", opts)
    assert _fs(s3_store).exists("w2v-test/encoded/encoded.json")
    run = tmp_path / "run"
    torchrun("train", encoded, "--output", str(run), *TRAIN, "--storage-options", opts, "--output-storage-options", "{}",
             "--cache-dir", str(tmp_path / "cache"))
    assert np.array_equal(np.load(run / "vectors.npy"), np.load(ref_run / "vectors.npy"))


def test_a_killed_run_leaves_no_secret_keeps_its_checkpoints_and_no_bucket_is_made(store, corpus_txt):
    """One process, its run in the store, SIGKILLed after step 17 (checkpoints at 5, 10 and 15).
    Guards: the lock it leaves holding the command line with --storage-options' secret as typed
    (found with Azurite's key); on az no checkpoint ever pruned (adlfs answered the listing from
    its cache: 9 of 9 kept with --keep-checkpoints 2); an --output in a bucket that does not exist
    creating that bucket (s3fs, gcsfs and adlfs make one for a misspelt name) or a traceback."""
    fs, base = _fs(store), f"{store.root}/lock"
    options = json.dumps(store.options())
    cli("prepare", str(corpus_txt), "--output", f"{base}/shards", *PREPARE, "--output-storage-options", options)
    p = cli("train", f"{base}/shards", "--output", f"{base}/run", *TRAIN, "--workers", "0", "--replicas", "1",
            "--storage-options", options, check=False, env={"W2V_DIST_FAULT": "kill@step:0:17"})
    assert p.returncode == -9, p.stderr[-3000:]
    root = base.split("://")[1] + "/run"
    fs.invalidate_cache()
    lock = fs.cat_file(f"{root}/.lock").decode()
    assert store.secret not in lock and "<redacted>" in json.loads(lock)["command"], lock
    assert sorted(int(d.rstrip("/").rsplit("-", 1)[1]) for d in fs.ls(f"{root}/checkpoints", detail=False)) == [10, 15]
    missing = store.root.split("://")[0] + "://w2v-no-such-bucket/shards"
    p = cli("prepare", str(corpus_txt), "--output", missing, "--output-storage-options", options, check=False)
    assert p.returncode == 2 and p.stderr.strip().splitlines()[-1] == (
        f"w2v-dist: error: {missing}: its bucket 'w2v-no-such-bucket' does not exist, or these credentials cannot "
        "see it; check the name, or create it first"), p.stderr[-3000:]
    fs.invalidate_cache()
    assert not fs.exists("w2v-no-such-bucket")


def test_a_store_s_error_line_holds_no_credential():
    """gcsfs, failing to check a token, said 'url: /tokeninfo?access_token=ya29...', and the line
    quoted it. Guards: a credential in a client's message printed on the terminal and in logs."""
    from w2v_dist.storage import unavailable_error
    said = str(unavailable_error("gs://b/x", OSError(
        "Cannot connect to host oauth2.googleapis.com url: /tokeninfo?access_token=ya29.SECRET&x=1; "
        "DefaultEndpointsProtocol=https;AccountName=a;AccountKey=SECRETKEY==;sig=SECRETSIG")))
    assert "SECRET" not in said and said.count("<redacted>") == 3 and said.startswith("gs://b/x: "), said


def test_missing_or_refused_credentials_are_one_line(s3_store, corpus_txt, tmp_path):
    """No credentials anywhere (options, environment, files), then a read-only one's refusal: one
    line each. Guards: botocore's NoCredentialsError and s3fs's PermissionError as 60-90-line
    tracebacks from prepare, export and encode (train said it in one line)."""
    endpoint = {"client_kwargs": {"endpoint_url": s3_store.url, "region_name": "us-east-1"}}
    bare = {"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "", "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
            "AWS_CONFIG_FILE": str(tmp_path / "none"), "AWS_EC2_METADATA_DISABLED": "true"}
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")} | bare
    p = subprocess.run([sys.executable, "-m", "w2v_dist", "prepare", str(corpus_txt), "--output",
                        f"{s3_store.root}/nocred", "--output-storage-options", json.dumps(endpoint)],
                       capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr[-3000:]
    assert p.stderr.strip().splitlines()[-1].startswith("w2v-dist: error: access refused (Unable to locate "
                                                        "credentials): check the store's credentials"), p.stderr


def test_a_store_that_does_not_answer_is_not_a_missing_corpus(store, tmp_path):
    """The corpus's store down from the start (nothing listens at its endpoint): one line saying the
    store did not answer, after the client's retries. Guards: gcsfs's ``isfile``/``isdir`` taking
    the outage for "not there", so that the corpus was said as "no such file or directory" (after
    two rounds of its retries, 67 s), under 4 tracebacks gcsfs logged."""
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        down = f"http://127.0.0.1:{s.getsockname()[1]}"
    so = json.dumps(store.options(down) | RETRIES[store.name])
    p = cli("train", f"{store.root}/shards", "--output", str(tmp_path / "run"), *TRAIN, "--storage-options", so,
            check=False)
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr[-3000:]
    said = p.stderr.strip().splitlines()[-1]
    assert said.startswith(f"w2v-dist: error: {store.root}/shards: the store did not answer"), p.stderr[-3000:]
    assert not (tmp_path / "run").exists()


def test_an_export_into_a_missing_bucket_names_it(store, tmp_path):
    """Guards: s3fs's 'The specified bucket does not exist' as the whole line (no URI; gcsfs named
    the request's HTTP URL), at the upload of an export."""
    vec = tmp_path / "v.txt"
    vec.write_text("2 3\nalpha 0.1 0.2 0.3\nbeta 0.3 0.2 0.1\n")
    out = store.root.replace("w2v-test", "w2v-missing") + "/v.txt"
    p = cli("export", str(vec), "--output", out, "--storage-options", json.dumps(store.options()), check=False)
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr[-3000:]
    said = p.stderr.strip().splitlines()[-1]
    assert said.startswith(f"w2v-dist: error: {out}: ") and "w2v-missing" in said.split(": ", 2)[2], said
