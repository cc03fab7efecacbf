"""Every row is trained once per epoch, by one process or many, on one node or several.

The oracle is the Parquet files themselves: tokens counted with pyarrow and ``str.split``
(``conftest.parquet_token_counts``), never with the reader, the tokenizer or the vocabulary pass
under test, which would agree with themselves about a row they all miss.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import PLAIN_EPOCHS, PLAIN_TRAIN, ROOT, parquet_token_counts, run_vocab
from tests.test_distributed import free_port

MIN_COUNT = int(PLAIN_TRAIN[PLAIN_TRAIN.index("--min-count") + 1])


def expected_words(corpus, run) -> int:
    """In-vocabulary tokens of the Parquet files, times the epochs: what a run must have trained."""
    counts = parquet_token_counts(corpus)
    words, _ = run_vocab(run)
    return PLAIN_EPOCHS * sum(counts[w] for w in words)


def test_vocabulary_is_the_corpus_counts(plain_corpus, plain_run):
    """Guards: a row dropped (or read twice) by the reader in the counting pass; --min-count off by
    one; the order of the vocabulary files (by count, then word).

    The files in <run>/vocab/ hold exactly the words that occur --min-count times or more in the
    Parquet files, with their counts."""
    counts = parquet_token_counts(plain_corpus)
    kept = sorted(((w, c) for w, c in counts.items() if c >= MIN_COUNT), key=lambda wc: (-wc[1], wc[0]))
    words, got = run_vocab(plain_run)
    assert list(zip(words, got.tolist())) == kept
    meta = json.loads((plain_run / "vocab" / "vocab.json").read_text())
    assert meta["total_words"] == sum(c for _, c in kept) and meta["raw_tokens"] == sum(counts.values())


@pytest.mark.parametrize("how", ["one process, 2 readers", "2 ranks"])
def test_every_row_is_trained_once_per_epoch(request, plain_corpus, how):
    """Guards: a row dropped by the reader (the two-rank end-to-end test took its expected word
    count from the vocabulary pass, which goes through the same reader, so both lost the row).

    The words a run trained on (summary.json, and the last metrics line) are the in-vocabulary
    tokens of the Parquet files times the epochs."""
    run = request.getfixturevalue("plain_run" if how.startswith("one") else "two_ranks")
    expected = expected_words(plain_corpus, run)
    summary = json.loads((run / "summary.json").read_text())
    last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert summary["words"] == expected and last["words"] == expected
    assert last["progress"] == 1.0


def test_two_nodes_train_what_two_ranks_on_one_node_train(plain_corpus, two_ranks, tmp_path):
    """Guards: anything keyed by the local rank instead of the global one (the data plan, the
    vocabulary pass): on two nodes both processes are local rank 0, would read the same half of
    the data and never the other, and still exit 0 (the two-node test checked exit codes only).

    Two torchrun agents rendezvous as two nodes of one rank each (c10d, each with its own
    node-local cache) and must write the vectors of the 2-rank single-node run bit for bit."""
    port, run, procs = free_port(), tmp_path / "run", []
    for node in (0, 1):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node-rank", str(node),
               "--nproc-per-node", "1", "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}",
               "--rdzv-id", "w2v-nodes", "-m", "w2v_dist", "train", str(plain_corpus), "--output", str(run),
               *PLAIN_TRAIN, "--workers", "1", "--cache-dir", str(tmp_path / f"cache-{node}")]
        procs.append(subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                      env={**os.environ, "OMP_NUM_THREADS": "1"}))
    outs = [p.communicate(timeout=240) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs[0][1][-3000:] + outs[1][1][-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["words"] == expected_words(plain_corpus, run)
    assert run_vocab(run)[0] == run_vocab(two_ranks)[0]
    assert np.array_equal(np.load(run / "vectors.npy"), np.load(two_ranks / "vectors.npy"))
