"""Many ranks through real torchrun (gloo, CPU) on real Parquet files."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from torch.utils.data import DataLoader

from tests.conftest import ROOT, cli
from w2v_dist.config import TokenizerConfig
from w2v_dist.corpus.dataset import CorpusStream, identity
from w2v_dist.corpus.plan import assign, make_units
from w2v_dist.corpus.shards import scan_shards
from w2v_dist.vocab import Vocab

TRAIN = ["--epochs", "1", "--dim", "24", "--min-count", "3", "--log-every", "1", "--workers", "1", "--threads", "1"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(*args: str, nproc: int = 2, extra: tuple[str, ...] = (), timeout: float = 240,
             check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", *extra]
    if not any(a.startswith("--nnodes") for a in extra):
        cmd += ["--standalone"]
    cmd += ["--nproc-per-node", str(nproc), "-m", "w2v_dist", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env)
    if check and p.returncode != 0:
        raise AssertionError(f"torchrun failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-6000:]}")
    return p


def test_two_ranks_train_end_to_end(small_corpus, tmp_path):
    gensim = pytest.importorskip("gensim")
    run = tmp_path / "r2"
    p = torchrun("train", str(small_corpus), "--output", str(run), *TRAIN, "--log-all-ranks")
    assert (run / "summary.json").exists()
    summary = json.loads((run / "summary.json").read_text())
    total = json.loads((run / "vocab/vocab.json").read_text())["total_words"]
    assert summary["world_size"] == 2 and summary["words"] == total  # global words drive the schedule
    steps = [int(line.split("steps=")[1].split()[0]) for line in p.stderr.splitlines() if "rank done:" in line]
    assert len(steps) == 2 and steps[0] == steps[1], p.stderr[-3000:]
    cli("export", str(run), "--format", "word2vec-binary", "--output", str(tmp_path / "v.bin"))
    kv = gensim.models.KeyedVectors.load_word2vec_format(str(tmp_path / "v.bin"), binary=True)
    np.testing.assert_array_equal(kv.vectors, np.load(run / "vectors.npy"))
    # rank 0 alone wrote the run: one metrics file, checkpoints without DDP's "module." prefix
    (ckpt,) = (run / "checkpoints").iterdir()
    import torch
    assert set(torch.load(ckpt / "model.pt", weights_only=True)) == {"in_embed", "out_embed"}


def test_distributed_vocabulary_equals_single_process(small_corpus, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    cli("train", str(small_corpus), "--output", str(one), *TRAIN)
    torchrun("train", str(small_corpus), "--output", str(two), *TRAIN)
    for name in ("counts.npy", "keep_prob.npy", "neg_prob.npy", "neg_alias.npy", "word_offsets.npy",
                 "word_bytes.npy", "vocab.json"):
        assert (one / "vocab" / name).read_bytes() == (two / "vocab" / name).read_bytes(), name


def _layout(tmp_path, name):
    d = tmp_path / name
    d.mkdir()
    rows = iter(f"r{i} x y" for i in range(100_000))
    def shard(i, n, rg):
        pq.write_table(pa.table({"text": pa.array([next(rows) for _ in range(n)], pa.string())}),
                       d / f"part-{i:05d}.parquet", row_group_size=max(rg, 1))
    if name == "one_shard":
        shard(0, 500, 500)
    elif name == "skewed":
        shard(0, 3000, 700), shard(1, 40, 40), shard(2, 5, 5)
    elif name == "empty_shard":
        shard(0, 300, 100), shard(1, 0, 1), shard(2, 200, 100)
    elif name == "few_row_groups":
        shard(0, 3, 3)
    return d


@pytest.mark.parametrize("layout", ["one_shard", "skewed", "empty_shard", "few_row_groups"])
def test_every_row_read_exactly_once_across_2_ranks_x_2_workers(tmp_path, layout):
    d = _layout(tmp_path, layout)
    shards = scan_shards(str(d))
    words = [f"r{i}" for i in range(sum(s.num_rows for s in shards))] + ["x", "y"]
    vocab_dir = str(tmp_path / "vocab")
    Vocab.build(pa.table({"word": words, "count": [1] * len(words)}), min_count=1, sample=0).save(vocab_dir)
    row_tokens = [[(n, 3 * n) for n in s.row_groups] for s in shards]
    for epoch in (0, 1):
        consumed: dict[tuple[int, int], list[str]] = {}
        for rank in (0, 1):
            stream = CorpusStream(shards, vocab_dir, TokenizerConfig(), model="cbow", window=1, negative=1, seed=5,
                                  epochs=epoch + 1, batch_words=50, rank=rank, world_size=2, row_tokens=row_tokens)
            stream.load_state_dict({"start_epoch": epoch})
            for chunk in DataLoader(stream, batch_size=None, num_workers=2, collate_fn=identity):
                vocab_words = [words[i] for i in chunk.examples.outputs]
                consumed.setdefault((rank, chunk.worker), []).extend(w for w in vocab_words if w.startswith("r"))
        every = Counter(w for ws in consumed.values() for w in ws)
        assert every == Counter({w: 1 for w in words if w.startswith("r")}), (layout, epoch)


def test_plan_balances_tokens_and_covers_every_row():
    row_groups = [[(1000, 10_000), (1000, 10_000)], [(10, 100)], [], [(0, 0)], [(5000, 80_000)]]
    units = make_units(row_groups, slots=4)
    covered = Counter((u.shard, u.row_group, r) for u in units for r in range(u.start, u.stop))
    assert len(covered) == 1000 + 1000 + 10 + 5000 and set(covered.values()) == {1}
    per_slot = [sum(u.tokens for u in slot) for slot in assign(units, 4, seed=1, epoch=0)]
    assert max(per_slot) - min(per_slot) <= max(u.tokens for u in units)
    assert assign(units, 4, 1, 0) == assign(units, 4, 1, 0) != assign(units, 4, 1, 1)


def test_rank_with_far_less_data_does_not_hang(tmp_path):
    """One row of 30k words and one of 10: a row cannot be split, so rank 1 runs out almost at once
    and must keep stepping (empty steps) until rank 0 is done."""
    d = tmp_path / "c"
    d.mkdir()
    big = " ".join(f"w{i % 300}" for i in range(30_000))
    pq.write_table(pa.table({"text": [big, "w1 w2 w3 w4 w5 w6 w7 w8 w9 w10"]}), d / "part-00000.parquet",
                   row_group_size=1)
    run = tmp_path / "run"
    p = torchrun("train", str(d), "--output", str(run), *TRAIN, "--batch-words", "200000", "--max-sentence-length",
                 "100000", "--log-all-ranks", timeout=180)
    done = [line for line in p.stderr.splitlines() if "rank done:" in line]
    steps = {int(line.split("steps=")[1].split()[0]) for line in done}
    with_data = sorted(int(line.split("with_data=")[1].split()[0]) for line in done)
    assert len(done) == 2 and len(steps) == 1, p.stderr[-3000:]
    assert with_data[0] < with_data[1] == steps.pop()  # the short rank ran empty steps to keep up


def test_two_torchrun_agents_as_two_nodes(small_corpus, tmp_path):
    port = free_port()
    run = tmp_path / "run"
    procs = []
    for node in (0, 1):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node-rank", str(node),
               "--nproc-per-node", "1", "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}",
               "--rdzv-id", "w2v-test", "-m", "w2v_dist", "train", str(small_corpus), "--output", str(run), *TRAIN,
               "--cache-dir", str(tmp_path / f"cache-{node}")]
        procs.append(subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                      env={**os.environ, "OMP_NUM_THREADS": "1"}))
    outs = [p.communicate(timeout=240) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs[0][1][-3000:] + outs[1][1][-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["world_size"] == 2


STEP_SCRIPT = """
import gc, sys, numpy as np, torch
from w2v_dist.distributed import setup
from w2v_dist.model import Word2Vec
from w2v_dist.pairs import Examples
from w2v_dist.train import make_step

def two_steps(dist, model_kind, batch):
    model = Word2Vec(40, 8, model_kind, seed=5)
    with torch.no_grad():
        model.out_embed.weight.copy_(torch.linspace(-0.2, 0.2, 40 * 8).reshape(40, 8))
    half = slice(dist.rank * 150, (dist.rank + 1) * 150)
    step = make_step(model, dist)
    for _ in range(2):
        step(Examples(batch["inputs"][half], batch["outputs"][half], batch["negatives"][half], 0), 0.05)
    return {k: v.detach().numpy().copy() for k, v in model.tables().items()}, model.stats["sync_bytes"]

with setup() as dist:
    # DDP (and its gloo work) is gone before the process group is torn down, as in train()
    tables, sync_bytes = two_steps(dist, sys.argv[1], np.load(sys.argv[2]))
    gc.collect()
    dist.barrier()
    if dist.rank == 0:
        np.savez(sys.argv[3], **tables, sync_bytes=sync_bytes)
"""


@pytest.mark.parametrize("model", ["sg", "cbow"])
def test_two_rank_step_is_the_one_process_step_on_both_halves(tmp_path, model):
    """Through real torchrun and gloo: each rank steps on its half of a batch, DDP all-reduces the
    row-sparse gradients (averaged, with the learning rate times the world size: the sum), and the
    tables come out as one process's fused step on the whole batch (twice, so the second step
    starts from the synced first)."""
    from tests.test_kernels import _batch
    from w2v_dist.model import Word2Vec
    from w2v_dist.pairs import Examples

    inputs, outputs, negatives = _batch(model, V=40, B=300)
    np.savez(tmp_path / "batch.npz", inputs=inputs, outputs=outputs, negatives=negatives)
    (tmp_path / "step.py").write_text(STEP_SCRIPT)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           str(tmp_path / "step.py"), model, str(tmp_path / "batch.npz"), str(tmp_path / "out.npz")]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=ROOT,
                       env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)})
    assert p.returncode == 0, p.stderr[-4000:]
    got = np.load(tmp_path / "out.npz")

    one = Word2Vec(40, 8, model, seed=5)
    with torch.no_grad():
        one.out_embed.weight.copy_(torch.linspace(-0.2, 0.2, 40 * 8).reshape(40, 8))
    for _ in range(2):
        one.step(Examples(inputs, outputs, negatives, 0), 0.05)
    for name, table in one.tables().items():
        np.testing.assert_allclose(got[name], table.detach().numpy(), rtol=1e-5, atol=1e-6)
    assert not np.allclose(got["in_embed"], Word2Vec(40, 8, model, seed=5).vectors())
    assert got["sync_bytes"] > 0
