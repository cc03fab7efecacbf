"""Many ranks through real torchrun (gloo, CPU) on real Parquet files."""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from torch.utils.data import DataLoader

from tests.conftest import ROOT, cli
from w2v_dist.config import ConfigError, TokenizerConfig
from w2v_dist.corpus.dataset import CorpusStream, identity
from w2v_dist.corpus.plan import assign, make_units
from w2v_dist.corpus.shards import scan_shards
from w2v_dist.distributed import device_for
from w2v_dist.sync import auto_sync_every
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
    # each rank's time in the collectives: in the summary, and said in one line by rank 0
    for key in ("rank_sync_s", "rank_exchange_s", "rank_wait_s"):  # each a part of the rank's own training time
        assert len(summary[key]) == 2 and all(0 <= x < t for x, t in zip(summary[key], summary["rank_elapsed_s"]))
    assert all(x + y <= t for x, y, t in zip(summary["rank_sync_s"], summary["rank_exchange_s"],
                                             summary["rank_elapsed_s"])), summary
    assert summary["rank_elapsed_s"][0] == summary["elapsed_s"]
    # each rank's time in them is its waiting for the slowest rank plus the collectives' own time
    for sync_s, exchange_s, wait_s in zip(summary["rank_sync_s"], summary["rank_exchange_s"], summary["rank_wait_s"]):
        assert abs(sync_s + exchange_s - wait_s - summary["collectives_own_s"]) < 0.01, summary
    assert sum("ranks spent" in line and "waiting for the slowest rank" in line for line in p.stderr.splitlines()) == 1
    steps = [int(line.split("steps=")[1].split()[0]) for line in p.stderr.splitlines() if "rank done:" in line]
    assert len(steps) == 2 and steps[0] == steps[1], p.stderr[-3000:]
    # --log-all-ranks shows every rank's progress lines too (rank 1's were never logged)
    assert all(re.search(rf"\[rank {r}\] INFO epoch 1/1 step \d+", p.stderr) for r in (0, 1)), p.stderr[-3000:]
    cli("export", str(run), "--format", "word2vec-binary", "--output", str(tmp_path / "v.bin"))
    kv = gensim.models.KeyedVectors.load_word2vec_format(str(tmp_path / "v.bin"), binary=True)
    np.testing.assert_array_equal(kv.vectors, np.load(run / "vectors.npy"))
    # rank 0 alone wrote the run: the two tables, exactly their size (not the kernel's stores)
    (ckpt,) = (run / "checkpoints").iterdir()
    tables = torch.load(ckpt / "model.pt", weights_only=True)
    assert set(tables) == {"in_embed", "out_embed"}
    assert all(t.untyped_storage().nbytes() == t.numel() * 4 for t in tables.values())


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
            stream = CorpusStream(shards, vocab_dir, TokenizerConfig(), seed=5, epochs=epoch + 1, batch_words=50,
                                  rank=rank, world_size=2, row_tokens=row_tokens)
            stream.load_state_dict({"start_epoch": epoch})
            for chunk in DataLoader(stream, batch_size=None, num_workers=2, collate_fn=identity):
                vocab_words = [words[i] for i in chunk.tokens.ids]
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
    # over the epochs of a run too: the extra unit of an epoch goes to another slot the next one, so
    # the ranks do not end a run one unit per epoch apart (the others stepping empty)
    units = make_units([[(7, 7_000)] * 9], slots=2)  # 9 equal units for 2 slots: one slot gets 5
    run = [0, 0]
    for epoch in range(6):
        run = [a + sum(u.tokens for u in slot) for a, slot in zip(run, assign(units, 2, 1, epoch))]
        assert abs(run[0] - run[1]) <= max(u.tokens for u in units), (epoch, run)
    assert run[0] == run[1]


def test_gpu_layouts_nccl_refuses_are_said_before_the_process_group():
    """Guards: a GPU layout that cannot work reaching ``init_process_group`` (on an H200, two ranks
    on one GPU under NCCL raised "Duplicate GPU detected" in a screen of tracebacks per rank) or
    ``set_device`` (a rank past the node's GPUs: "invalid device ordinal"). Said as one
    :class:`ConfigError` that names the flag and the fix; the node's GPU count is given."""
    assert device_for("cpu", 3, 4, "gloo", gpus=0) == "cpu"
    assert device_for("cuda", 1, 2, None, gpus=2) == "cuda:1"
    assert device_for("cuda:0", 1, 2, "gloo", gpus=1) == "cuda:0"  # gloo shares one GPU
    assert device_for("cuda:1", 0, 1, None, gpus=2) == "cuda:1"
    refused = [(("cuda", 0, 1, None, 0), "torch sees no CUDA device here"),
               (("cuda", 1, 2, None, 1), "this node has 1 GPU(s) and 2 ranks; launch torchrun --nproc-per-node 1"),
               (("cuda", 0, 3, None, 2), "this node has 2 GPU(s) and 3 ranks"),  # rank 0 too, which has its GPU
               (("cuda:2", 0, 1, None, 2), "--device cuda:2: this node has 2 GPU(s), cuda:0 to cuda:1"),
               (("cuda:0", 0, 2, None, 1), "--device cuda:0 puts all 2 ranks of this node on one GPU, which NCCL "
                                           "refuses; use --device cuda (rank r on cuda:LOCAL_RANK), or --backend gloo"),
               (("cuda:0", 0, 2, "nccl", 4), "which NCCL refuses")]
    for (device, local_rank, local_world, backend, gpus), says in refused:
        with pytest.raises(ConfigError, match=re.escape(says)) as e:
            device_for(device, local_rank, local_world, backend, gpus=gpus)
        assert e.value.every_rank  # follows from the command line and the node: rank 0 says it once


def test_rank_with_far_less_data_does_not_hang(tmp_path):
    """One row of 30k words and one of 10: a row is not split between ranks, so rank 1 runs out
    almost at once and must keep stepping (empty steps) until rank 0 is done with its 30 chunks;
    the ranks learn that everyone is done at the next exchange (every --sync-every steps, H)."""
    d = tmp_path / "c"
    d.mkdir()
    big = " ".join(f"w{i % 300}" for i in range(30_000))
    pq.write_table(pa.table({"text": [big, "w1 w2 w3 w4 w5 w6 w7 w8 w9 w10"]}), d / "part-00000.parquet",
                   row_group_size=1)
    run = tmp_path / "run"
    p = torchrun("train", str(d), "--output", str(run), *TRAIN, "--batch-words", "1000", "--log-all-ranks",
                 timeout=180)
    done = [line for line in p.stderr.splitlines() if "rank done:" in line]
    steps = {int(line.split("steps=")[1].split()[0]) for line in done}
    with_data = sorted(int(line.split("with_data=")[1].split()[0]) for line in done)
    assert len(done) == 2 and len(steps) == 1, p.stderr[-3000:]
    steps = steps.pop()
    H = auto_sync_every(2)  # the default at 2 ranks
    assert with_data[0] < with_data[1] == 30 <= steps < 30 + H  # the short rank ran empty steps to keep up


def test_a_cache_disk_every_reader_meets_is_said_once_a_node(small_corpus, tmp_path):
    """2 ranks x 2 reader processes whose --cache-dir cannot be written (a file): one warning, by
    the node's first rank's first reader. Guards: one identical line per rank and reader (4 here,
    8 x --workers at 8 ranks)."""
    (tmp_path / "afile").write_text("not a directory\n")
    p = torchrun("train", str(small_corpus), "--output", str(tmp_path / "r"), *TRAIN, "--workers", "2",
                 "--cache-dir", str(tmp_path / "afile"))
    said = [line for line in p.stderr.splitlines() if "not caching more" in line and "WARNING" in line]
    assert len(said) == 1 and "[rank 0] WARNING token cache" in said[0], p.stderr[-3000:]


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



def test_a_run_directory_one_node_cannot_see_is_said_once(small_corpus, tmp_path):
    """Two nodes whose --output is a relative path, each in its own directory: rank 0 writes the
    vocabulary where rank 1 never looks. Rank 1 said 'no vocabulary here' and rank 0 died with a
    gloo traceback; now rank 0 says, once, what rank 1 found and what --output must be."""
    port, procs = free_port(), []
    for node in (0, 1):
        (tmp_path / f"node-{node}").mkdir()
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node-rank", str(node),
               "--nproc-per-node", "1", "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}",
               "--rdzv-id", "w2v-test", "-m", "w2v_dist", "train", str(small_corpus), "--output", "run", *TRAIN]
        procs.append(subprocess.Popen(cmd, cwd=tmp_path / f"node-{node}", stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True,
                                      env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}))
    outs = [p.communicate(timeout=240) for p in procs]
    assert [p.returncode != 0 for p in procs] == [True, True]
    errors = [line for line in outs[0][1].splitlines() if line.startswith("w2v-dist: error:")]
    assert errors == ["w2v-dist: error: run/vocab: no vocabulary here (vocab.json missing) on rank 1, where rank 0 "
                      "wrote it: this rank does not see rank 0's --output; on several nodes it must be a place every "
                      "node reaches (a shared file system or an object store)"], outs[0][1][-3000:]
    assert "[rank0]: Traceback" not in outs[0][1]  # torchrun's report of the failed rank follows, as ever

SYNC_SCRIPT = """
import sys, numpy as np, torch
from w2v_dist.distributed import setup
from w2v_dist.sync import TableSync

with setup() as dist:
    g = torch.Generator().manual_seed(0)
    table = torch.rand(50, 4, generator=g)  # the same on both ranks, as the seeded init is
    sync = TableSync({"t": table}, dist, every=1, rows=8, combine=sys.argv[1])
    # rank r changes rows r, 10..19 (both ranks) and 40 + r
    table[dist.rank] += 1.0 + dist.rank
    table[10:20] += 0.5 * (1 + dist.rank)
    table[40 + dist.rank] -= 2.0
    sync.after_step(1)  # sync 1: the first 8 rows only
    first = table.clone()
    sync.full()
    out = [torch.zeros_like(table) for _ in range(2)]
    torch.distributed.all_gather(out, table)
    if dist.rank == 0:
        np.savez(sys.argv[2], first=first.numpy(), r0=out[0].numpy(), r1=out[1].numpy(),
                 start=torch.rand(50, 4, generator=torch.Generator().manual_seed(0)).numpy(), bytes=sync.bytes)
"""


def _two_ranks_run(script: str, combine: str, tmp_path) -> dict:
    """``script`` (a ``TableSync`` exercise) on 2 ranks through real torchrun and gloo; rank 0's npz."""
    (tmp_path / "script.py").write_text(script)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           str(tmp_path / "script.py"), combine, str(tmp_path / "out.npz")]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=ROOT,
                       env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)})
    assert p.returncode == 0, p.stderr[-4000:]
    return np.load(tmp_path / "out.npz")


OVERLAP_SCRIPT = """
import sys, numpy as np, torch
from w2v_dist.distributed import setup
from w2v_dist.sync import TableSync

with setup() as dist:
    r = dist.rank
    table = torch.rand(50, 4, generator=torch.Generator().manual_seed(0))
    sync = TableSync({"t": table}, dist, every=1, rows=8, combine=sys.argv[1], overlap=True)
    table[r] += 1.0 + r
    table[10:20] += 0.5 * (1 + r)
    sync.after_step(1)  # sync 1, rows 0..7: sent, not yet applied
    first = table.clone()
    table[r] += 10.0 * (1 + r)  # trained while sync 1 is summed
    table[30 + r] += 3.0
    sync.after_step(2)  # sync 2 (rows 0..15) applies sync 1, then sends
    second = table.clone()
    sync.full()  # applies sync 2 and syncs every row, waiting
    out = [torch.zeros_like(table) for _ in range(2)]
    torch.distributed.all_gather(out, table)
    if r == 0:
        np.savez(sys.argv[2], first=first.numpy(), second=second.numpy(), r0=out[0].numpy(), r1=out[1].numpy())
"""


@pytest.mark.parametrize("combine", ["mean", "rowmean"])
def test_overlapped_sync_lands_one_interval_late(tmp_path, combine):
    """``--sync-overlap`` through real torchrun and gloo: a sync leaves the table as it was (the
    ranks' changes are summed while they train on); the next sync gives each synced row the
    combined change in place of the rank's own, keeping what the rank trained meanwhile; a full
    sync leaves the ranks equal, each row with the combination of each rank's changes per interval.
    Guards: a rank's own change counted twice or lost, the interval's training overwritten by the
    late result, ranks apart after a full sync (a checkpoint of one rank's table)."""
    got = _two_ranks_run(OVERLAP_SCRIPT, combine, tmp_path)
    start = torch.rand(50, 4, generator=torch.Generator().manual_seed(0)).numpy().astype(np.float64)
    one = [np.zeros((50, 4)), np.zeros((50, 4))]  # each rank's changes before sync 1
    two = [np.zeros((50, 4)), np.zeros((50, 4))]  # ... between syncs 1 and 2
    for r in (0, 1):
        one[r][r] += 1.0 + r
        one[r][10:20] += 0.5 * (1 + r)
        two[r][r] += 10.0 * (1 + r)
        two[r][30 + r] += 3.0

    def combined(d0, d1):
        if combine == "mean":
            return (d0 + d1) / 2
        touched = (d0 != 0).any(1).astype(float) + (d1 != 0).any(1).astype(float)
        return (d0 + d1) / np.maximum(touched, 1)[:, None]

    np.testing.assert_allclose(got["first"], start + one[0], rtol=1e-6, atol=1e-6)  # nothing applied yet
    c1 = combined(one[0], one[1])
    want = start + one[0] + two[0]  # rank 0 after sync 2: rows 0..7 get c1 in place of its own changes
    want[:8] += (c1 - one[0])[:8]
    np.testing.assert_allclose(got["second"], want, rtol=1e-6, atol=1e-6)
    # the full sync: rows 0..15 were combined per interval (rows 0..7: sync 1, then 0..15: sync 2 with
    # what was left of interval 1 in rows 8..15); the rest in one go
    c_rest = combined(one[0] + two[0], one[1] + two[1])
    c2 = combined(two[0] + np.where(np.arange(50)[:, None] < 8, 0, one[0]),
                  two[1] + np.where(np.arange(50)[:, None] < 8, 0, one[1]))
    rows = np.arange(50)[:, None]
    final = start + np.where(rows < 8, c1 + c2, np.where(rows < 16, c2, c_rest))
    np.testing.assert_array_equal(got["r0"], got["r1"])
    np.testing.assert_allclose(got["r0"], final, rtol=1e-6, atol=1e-6)


NODE_SCRIPT = """
import sys, numpy as np, torch
from w2v_dist.distributed import setup
from w2v_dist.sync import TableSync

with setup() as dist:
    r = dist.rank
    table = torch.rand(50, 4, generator=torch.Generator().manual_seed(0))
    sync = TableSync({"t": table}, dist, every=4, rows=8, node_every=2)
    table[r] += 1.0 + r
    table[10:20] += 0.5 * (1 + r)
    sync.after_step(1)  # nothing
    sync.after_step(2)  # node sync 1: rows 0..7, among the node's ranks
    node = table.clone()
    table[r] += 10.0 * (1 + r)
    sync.after_step(4)  # sync 1 of all ranks: rows 0..7
    every = table.clone()
    table[r] += 100.0 * (1 + r)
    sync.after_step(6)  # node sync 2: rows 0..15, from what all ranks agreed on rows 0..7
    node2 = table.clone()
    sync.full()
    out = {}
    for name, t in (("node", node), ("every", every), ("node2", node2), ("final", table)):
        got = [torch.zeros_like(t) for _ in range(dist.world_size)]
        torch.distributed.all_gather(got, t)
        out[name] = torch.stack(got).numpy()
    if r == 0:
        np.savez(sys.argv[1], ranks=np.array(dist.node_ranks()), bytes=sync.bytes, node_bytes=sync.node_bytes, **out)
"""


def _two_agents(args: list[str], nproc: int | tuple[int, int], cwd, timeout: float = 240, check: bool = True,
                node_1_args: list[str] | None = None, env: dict | None = None) -> list[tuple[str, str]]:
    """Two torchrun agents on this host as two nodes (static rendezvous: node 0 is rank 0's and
    hosts the store), ``nproc`` ranks each (or node 0's and node 1's); node 1 runs ``node_1_args``
    where given."""
    port, procs = free_port(), []
    for node in (0, 1):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node-rank", str(node),
               "--nproc-per-node", str(nproc if isinstance(nproc, int) else nproc[node]), "--master-addr",
               "127.0.0.1", "--master-port", str(port),
               *(node_1_args if node == 1 and node_1_args is not None else args)]
        procs.append(subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                      env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), **(env or {})}))
    try:
        outs = [p.communicate(timeout=timeout) for p in procs]
    finally:
        for p in procs:  # a hang: leave no agent (nor its ranks) behind
            if p.poll() is None:
                p.kill()
    assert not check or [p.returncode for p in procs] == [0, 0], outs[0][1][-3000:] + outs[1][1][-3000:]
    return outs


@pytest.mark.parametrize("flags, says", [(["--dim", "0"], "--dim must be a positive integer, got 0"),
                                         (["--dimm", "5"], "unrecognized arguments: --dimm 5")], ids=["value", "usage"])
def test_an_error_every_rank_meets_is_said_once_a_node(small_corpus, tmp_path, flags, says):
    """Two agents of 2 ranks, the same bad flag on both: rank 0 says it, and the other node, whose
    agent learns of it later, once in its own log. Guards: each rank of the other node saying it
    (its log had the error twice, with the usage twice)."""
    outs = _two_agents(["-m", "w2v_dist", "train", str(small_corpus), "--output", str(tmp_path / "r"), *flags], 2,
                       ROOT, check=False)
    for node, (_, err) in enumerate(outs):
        said = [line for line in err.splitlines() if says in line]
        assert len(said) <= 1 and (node == 1 or len(said) == 1), (node, err[-3000:])


def test_node_syncs_average_within_a_node_and_all_ranks_agree_later(tmp_path):
    """``--sync-node-every`` through two real torchrun agents (two nodes of 2 gloo ranks each): a
    node sync averages the prefix over the node's ranks only (the other node's rows untouched by
    it); the next sync of all ranks leaves every rank with the mean over all 4 ranks of what each
    changed, as if every sync had been of all ranks (a node's agreed change is not counted once
    per rank of it), and a node sync after it starts from that; a full sync the same for every
    row. Guards: a node sync across nodes or divided by all ranks, a node sync that moves the
    snapshot of what all ranks agreed on (the nodes would then sync from different snapshots and
    stay apart), ranks left apart."""
    (tmp_path / "script.py").write_text(NODE_SCRIPT)
    _two_agents([str(tmp_path / "script.py"), str(tmp_path / "out.npz")], 2, ROOT)
    got = np.load(tmp_path / "out.npz")
    assert got["ranks"].tolist() == [0, 1]  # rank 0's node: ranks 0 and 1 (node 1: 2 and 3)
    start = torch.rand(50, 4, generator=torch.Generator().manual_seed(0)).numpy().astype(np.float64)
    one, two, three = np.zeros((3, 4, 50, 4))  # each rank's changes before node sync 1, sync 1, node sync 2
    for r in range(4):
        one[r][r] += 1.0 + r
        one[r][10:20] += 0.5 * (1 + r)
        two[r][r] += 10.0 * (1 + r)
        three[r][r] += 100.0 * (1 + r)
    nodes = [one[:2].mean(0), one[2:].mean(0)]
    for r in range(4):
        want = start + one[r]
        want[:8] = (start + nodes[r // 2])[:8]
        np.testing.assert_allclose(got["node"][r], want, rtol=1e-6, atol=1e-6)
        want = start + one[r] + two[r]
        want[:8] = (start + (one + two).mean(0))[:8]
        np.testing.assert_allclose(got["every"][r], want, rtol=1e-6, atol=1e-6)
        node = slice(2 * (r // 2), 2 * (r // 2) + 2)
        want = start + one[r]
        want[:16] = (start + one[node].mean(0))[:16]
        want[:8] = (start + (one + two).mean(0) + three[node].mean(0))[:8]
        np.testing.assert_allclose(got["node2"][r], want, rtol=1e-6, atol=1e-6)
    for r in range(4):
        np.testing.assert_array_equal(got["final"][r], got["final"][0])
    np.testing.assert_allclose(got["final"][0], start + (one + two + three).mean(0), rtol=1e-6, atol=1e-6)
    assert 0 < got["node_bytes"] < got["bytes"]


@pytest.mark.parametrize("bad_node, flags, says", [
    (1, ["--epochs", "-1"], "--epochs must be a positive integer, got -1"),
    (0, ["--epochz", "3"], "unrecognized arguments: --epochz 3")], ids=["value-on-node-1", "usage-on-node-0"])
def test_a_flag_one_node_refuses_stops_both_nodes_at_once(small_corpus, tmp_path, bad_node, flags, says):
    """One node's command line has a bad flag, the other's is fine. The ranks meet before the
    process group, so both nodes stop at once and each node's log says which rank refused what.
    Guards: node 0 (fine) waiting in the process group's rendezvous for rank 1, which had stopped
    (30 minutes: its timeout); node 1 (fine) getting a page of gloo frames and no word of why when
    rank 0, whose agent hosts the store, stopped on its own bad flag."""
    good = ["-m", "w2v_dist", "train", str(small_corpus), "--output", str(tmp_path / "r"), *TRAIN]
    bad = [*good, *flags]
    t0 = time.monotonic()
    outs = _two_agents(bad if bad_node == 0 else good, 1, ROOT, timeout=150, check=False,
                       node_1_args=bad if bad_node == 1 else good)
    assert time.monotonic() - t0 < 120
    want = (f"{says} (on rank {bad_node}); rank {1 - bad_node} accepted its command line: every node must run the "
            "same command")
    for node, (_, err) in enumerate(outs):
        said = [line for line in err.splitlines() if line.startswith("w2v-dist: error:")]
        assert said == [f"w2v-dist: error: {want}" + (" [rank 1]" if node == 1 else "")], (node, err[-3000:])
    assert not (tmp_path / "r").exists()  # nothing started


MEET_SCRIPT = """
import os, sys
from w2v_dist import distributed
from w2v_dist.config import ConfigError

distributed.START_WAIT_S = 5.0
rank = int(os.environ["RANK"])
if rank == 3 and sys.argv[2] == "leave":
    sys.exit(0)  # stops before the start: the others must not wait for it in the process group
said = open(f"{sys.argv[3]}/rank-{rank}.txt", "w")  # a file each: the ranks' stdout lines interleave
try:
    with distributed.setup(device=sys.argv[1] if rank == 1 else "cpu"):
        said.write(f"rank {rank} started")
except (ConfigError, distributed.StartError) as e:
    said.write(f"rank {rank}: {type(e).__name__}: {e} (every rank: {getattr(e, 'every_rank', False)})")
said.close()
"""


@pytest.mark.parametrize("device, rank_3", [("cpu", "leave"), ("cuda:7", "stay")], ids=["one-missing", "one-refused"])
def test_the_ranks_meet_before_the_process_group(tmp_path, device, rank_3):
    """Real torchrun, 4 gloo ranks. Rank 3 stops before the start: the others stop after the
    meeting's wait, naming it, not after the process group's rendezvous timeout (30 minutes).
    Rank 1 is given a GPU it has not: every rank raises its refusal, naming it, as every rank's error."""
    if torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    (tmp_path / "script.py").write_text(MEET_SCRIPT)
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "4",
                        str(tmp_path / "script.py"), device, rank_3, str(tmp_path)], capture_output=True, text=True,
                       timeout=120, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)})
    assert time.monotonic() - t0 < 60, p.stderr[-3000:]
    said = sorted(f.read_text() for f in tmp_path.glob("rank-*.txt"))
    if rank_3 == "leave":
        assert said == [f"rank {r}: StartError: rank 3 of 4 did not start within 5 s: it stopped before it could say "
                        "why (see the node's log, or torchrun's report of the exit); the others stop too (every rank: "
                        "True)" for r in range(3)], p.stdout + p.stderr[-3000:]
    else:
        assert len(said) == 4 and len({line.split(": ", 1)[1] for line in said}) == 1, p.stdout + p.stderr[-3000:]
        assert re.fullmatch(r"rank 0: ConfigError: --device cuda:7: .* \(on rank 1\); ranks 0, 2, 3 accepted their "
                            r"command line: every node must run the same command \(every rank: True\)", said[0]), said


def test_ranks_are_named_in_runs():
    from w2v_dist.distributed import ranks_text
    assert [ranks_text([3]), ranks_text([1, 3]), ranks_text([4, 5, 6, 7]), ranks_text([0, 1, 3, 5, 6, 7])] == [
        "rank 3", "ranks 1, 3", "ranks 4-7", "ranks 0, 1, 3, 5-7"]


def test_two_nodes_train_with_node_syncs(small_corpus, tmp_path):
    """The real CLI on two torchrun agents of 2 ranks each with ``--sync-node-every``: it says how it
    syncs, syncs within the nodes (bytes counted apart), and ends with one table; with one rank
    per node it says the flag does nothing."""
    run = tmp_path / "run"
    args = ["-m", "w2v_dist", "train", str(small_corpus), "--output", str(run), *TRAIN, "--workers", "0",
            "--batch-words", "1000", "--sync-every", "4", "--sync-node-every", "2"]
    outs = _two_agents(args, 2, ROOT)
    assert "syncs: within each node every 2 steps, across all 4 ranks every 4" in outs[0][1]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["world_size"] == 4
    assert 0 < summary["node_sync_bytes_per_word"] < summary["sync_bytes_per_word"]
    assert np.isfinite(np.load(run / "vectors.npy")).all()
    outs = _two_agents([*args[:5], str(tmp_path / "one"), *args[6:]], 1, ROOT)
    assert "--sync-node-every 2 does nothing here: one rank per node" in outs[0][1]
    assert json.loads((tmp_path / "one" / "summary.json").read_text())["node_sync_bytes_per_word"] == 0


def test_node_syncs_on_nodes_of_unequal_ranks_resume_exactly(small_corpus, tmp_path):
    """Two agents of 1 and 2 ranks with ``--sync-node-every``: node 1's ranks sync among themselves,
    node 0's one rank has nothing to sync, and the run says so. Killed and resumed from its
    checkpoint, it ends in the uninterrupted run's vectors. Guards: rank 0 saying the flag "does
    nothing here" while node 1 ran node syncs, and a resume that was not exact: the checkpoint keeps
    rank 0's count of node syncs (0, its node had none), which node 1 then restarted its prefix
    schedule from."""
    args = ["-m", "w2v_dist", "train", str(small_corpus), *TRAIN, "--epochs", "2", "--workers", "0",
            "--batch-words", "1000", "--sync-every", "4", "--sync-node-every", "2", "--log-every", "0"]
    ref, run = tmp_path / "ref", tmp_path / "run"
    outs = _two_agents([*args, "--output", str(ref)], (1, 2), ROOT)
    assert "syncs: within each node of several ranks (ranks per node: 1, 2) every 2 steps, across all 3 ranks every " \
        "4" in outs[0][1], outs[0][1][-3000:]
    outs = _two_agents([*args, "--output", str(run), "--checkpoint-every", "5"], (1, 2), ROOT, check=False,
                       env={"W2V_DIST_FAULT": "kill@step:2:80"})
    assert not (run / "summary.json").exists() and (run / "checkpoints").exists(), outs[0][1][-3000:]
    _two_agents([*args, "--output", str(run), "--checkpoint-every", "5"], (1, 2), ROOT)
    assert np.array_equal(np.load(ref / "vectors.npy"), np.load(run / "vectors.npy"))


def test_a_node_resuming_with_other_threads_is_said(small_corpus, tmp_path):
    """Two agents of one rank; killed, then resumed with node 1 on 2 kernel threads (a node's own
    setting): rank 0 says that rank 1's kernel layout differs from what the checkpoint trained.
    Guards: the checkpoint kept rank 0's layout only and only rank 0 compared it: silence, and
    the run off the uninterrupted run's bits."""
    run = tmp_path / "run"
    args = ["-m", "w2v_dist", "train", str(small_corpus), "--output", str(run), *TRAIN, "--epochs", "2",
            "--workers", "0", "--batch-words", "1000", "--sync-every", "4", "--checkpoint-every", "5", "--log-every", "0"]
    _two_agents(args, 1, ROOT, check=False, env={"W2V_DIST_FAULT": "kill@step:1:80"})
    assert (run / "checkpoints").exists() and not (run / "summary.json").exists()
    outs = _two_agents(args, 1, ROOT, node_1_args=[*args, "--threads", "2"])
    said = [line for line in outs[0][1].splitlines() if "kernel thread(s) on rank 1 where checkpoint" in line]
    assert len(said) == 1 and "resuming with 1 replica(s) and 2 kernel thread(s) on rank 1 where checkpoint step-" \
        in said[0] and "trained 1 and 1" in said[0], outs[0][1][-3000:]


@pytest.mark.parametrize("flags, expect", [
    (["--sync-every", "4", "--sync-node-every", "4"],
     "--sync-node-every 4 must be below the steps between syncs of all ranks (--sync-every: 4), or 0"),
    (["--sync-node-every", "2", "--sync-combine", "sum"], "--sync-node-every works with --sync-combine mean, not sum"),
    pytest.param(["--backend", "nccl"], f"--backend nccl: this torch ({torch.__version__}) was built without it; use gloo",
                 marks=pytest.mark.skipif(torch.distributed.is_nccl_available(), reason="this torch has NCCL")),
], ids=["not-below-sync-every", "sum", "backend-not-built"])
def test_node_sync_settings_that_cannot_work_are_said_once(small_corpus, tmp_path, flags, expect):
    p = torchrun("train", str(small_corpus), "--output", str(tmp_path / "r"), *TRAIN, *flags, check=False)
    assert p.returncode != 0
    errors = [line for line in p.stderr.splitlines() if line.startswith("w2v-dist: error:")]
    assert len(errors) == 1 and errors[0].startswith(f"w2v-dist: error: {expect}"), p.stderr[-3000:]
    assert not (tmp_path / "r").exists()  # said before the run directory: the corrected command starts afresh


@pytest.mark.parametrize("combine", ["rowmean", "sum", "mean"])
def test_sync_combines_the_ranks_changes(tmp_path, combine):
    """Through real torchrun and gloo: the prefix sync touches the first rows only, a full sync
    leaves both ranks with the same table, and each row gets the combined changes: rowmean (a row
    one rank changed keeps that change; a row both changed gets their mean), sum or mean.
    Guards: a sync that averages rows one rank trained (halving rare words), sums where it should
    not, or leaves ranks apart."""
    got = _two_ranks_run(SYNC_SCRIPT, combine, tmp_path)
    start = got["start"]
    np.testing.assert_array_equal(got["r0"], got["r1"])
    delta = {"rank": {0: np.zeros((50, 4)), 1: np.zeros((50, 4))}}
    for r in (0, 1):
        delta["rank"][r][r] += 1.0 + r
        delta["rank"][r][10:20] += 0.5 * (1 + r)
        delta["rank"][r][40 + r] -= 2.0
    d0, d1 = delta["rank"][0], delta["rank"][1]
    touched = (d0 != 0).any(1).astype(float) + (d1 != 0).any(1).astype(float)
    want = {"sum": d0 + d1, "mean": (d0 + d1) / 2,
            "rowmean": (d0 + d1) / np.maximum(touched, 1)[:, None]}[combine]
    np.testing.assert_allclose(got["r0"], start + want, rtol=1e-6, atol=1e-6)
    # after the first (prefix) sync rank 0 already had rows 0..7 combined, and only those
    np.testing.assert_allclose(got["first"][:8], (start + want)[:8], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(got["first"][10:20], (start + d0)[10:20], rtol=1e-6, atol=1e-6)
    assert got["bytes"] > 0


BFLOAT16_SCRIPT = """
import sys, numpy as np, torch
from w2v_dist.distributed import setup
from w2v_dist.sync import TableSync

with setup() as dist:
    start = torch.rand(50, 4, generator=torch.Generator().manual_seed(0))
    # rank r's change: thirds, which neither type holds exactly; rows 30.. no rank trained
    change = torch.randn(50, 4, generator=torch.Generator().manual_seed(1 + dist.rank)) / 3
    change[30:] = 0
    out = {"start": start.numpy()}
    for dtype in ("float32", "bfloat16"):
        table = start.clone()
        sync = TableSync({"t": table}, dist, every=1, rows=8, combine="mean", dtype=dtype)
        table += change
        sync.full()
        both = [torch.zeros_like(table) for _ in range(2)]
        torch.distributed.all_gather(both, table)
        out[dtype], out[dtype + "_bytes"] = torch.stack(both).numpy(), sync.bytes
    if dist.rank == 0:
        np.savez(sys.argv[2], **out)
"""


def test_bfloat16_sync_rounds_the_changes_not_the_tables(tmp_path):
    """``--sync-dtype bfloat16`` through real torchrun and gloo: half the bytes of float32; the
    ranks leave a full sync bitwise equal; each row moves by the ranks' mean change to within
    bfloat16's rounding of the changes, and the rows no rank changed keep their float32 values
    bitwise. Guards: a sync that rounds the tables themselves (every row loses 16 bits, trained or
    not), ranks apart after a sync (a checkpoint of one rank's table), a flag that still sends
    float32."""
    got = _two_ranks_run(BFLOAT16_SCRIPT, "mean", tmp_path)
    assert got["bfloat16_bytes"] * 2 == got["float32_bytes"] > 0
    c0, c1 = ((torch.randn(50, 4, generator=torch.Generator().manual_seed(1 + r)) / 3).numpy() for r in (0, 1))
    c0[30:], c1[30:] = 0, 0
    want = got["start"].astype(np.float64) + (c0.astype(np.float64) + c1) / 2
    for dtype in ("float32", "bfloat16"):
        np.testing.assert_array_equal(got[dtype][0], got[dtype][1])
        np.testing.assert_array_equal(got[dtype][0][30:], got["start"][30:])
    np.testing.assert_allclose(got["float32"][0], want, rtol=0, atol=1e-6)
    # each rank's change rounded to 8 significant bits, their sum rounded again, then halved
    err = np.abs(got["bfloat16"][0] - want)
    assert (err <= 2 ** -7 * (np.abs(c0) + np.abs(c1)) / 2 + 1e-6).all(), err.max()
    assert (err > 1e-5).any()  # the changes did travel in bfloat16


def test_one_process_and_two_ranks_follow_one_schedule(small_corpus, tmp_path):
    """The learning rate and progress follow the global word count: 1 process and 2 ranks end at
    the same progress and learning rate. Guards: a schedule over world_size x words (2 ranks
    would decay half as fast) or a rank's words not counted (progress short of 1)."""
    one, two = tmp_path / "one", tmp_path / "two"
    H = 4  # exchanges every 4 steps (not the default 16) keep the bound below tight on a small corpus
    args = [*TRAIN, "--log-every", "0", "--batch-words", "2000", "--sync-every", str(H)]
    cli("train", str(small_corpus), "--output", str(one), *args)
    torchrun("train", str(small_corpus), "--output", str(two), *args)
    last = {}
    for name, run in (("one", one), ("two", two)):
        records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        last[name] = records[-1]
        assert records[-1]["progress"] == pytest.approx(1.0)
        lrs = [r["lr"] for r in records]
        assert lrs == sorted(lrs, reverse=True)
    # the last step starts 2000 words (one process) before the end; two ranks learn each other's
    # words every --sync-every (H) steps, so their lr holds for up to H steps of 2 x ~2000 words
    total = json.loads((one / "vocab/vocab.json").read_text())["total_words"]
    for name, chunk in (("one", 2000), ("two", H * 4000)):
        assert last[name]["lr"] <= 0.025 * (chunk + 300) / total + 1e-4, (name, last[name])
    assert json.loads((two / "summary.json").read_text())["words"] == total


def test_a_small_run_s_rate_decays_on_several_ranks(small_corpus, tmp_path):
    """2 ranks at the default interval (64 steps at 2 ranks) on a run of fewer steps than that: the
    ranks exchange their words at least 16 times a run, so the rate decays to the end as one
    process's does. Guards: exchanges only every --sync-every steps, which held the rate through
    the whole of a small run (2 ranks on 150k words ended at 0.0241, one process at 0.0008)."""
    run = tmp_path / "two"
    torchrun("train", str(small_corpus), "--output", str(run), *TRAIN, "--log-every", "0", "--batch-words", "2000")
    total = json.loads((run / "vocab/vocab.json").read_text())["total_words"]
    assert total // 4000 < 64  # each rank's chunks: the whole run inside one interval of --sync-every
    lrs = [json.loads(x)["lr"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(set(lrs)) >= 16 and lrs == sorted(lrs, reverse=True)
    # an exchange every total // (2 ranks x 2000 words) // 16 steps: the rate holds over that many chunks
    held = max(1, total // 4000 // 16) * 4000
    assert lrs[-1] <= 0.025 * (held + 300) / total + 1e-4, (lrs[-1], held, total)


def test_torchrun_with_one_rank_is_one_process(small_corpus, tmp_path):
    """``torchrun --nproc-per-node 1`` (a one-GPU node's recipe) trains what one process does, bit
    for bit, its learning rate moving every step. Guard: one rank exchanging its words every
    --sync-every steps as if others were waiting, which held the rate for 64 steps at a time (on a
    corpus of 33 chunks it trained at 0.025 throughout, seen on an H200) and ran empty steps to the
    next exchange."""
    one, two = tmp_path / "one", tmp_path / "torchrun"
    args = [*TRAIN, "--log-every", "0", "--batch-words", "2000"]
    cli("train", str(small_corpus), "--output", str(one), *args)
    torchrun("train", str(small_corpus), "--output", str(two), *args, nproc=1)
    summaries = [json.loads((run / "summary.json").read_text()) for run in (one, two)]
    assert summaries[0]["steps"] == summaries[1]["steps"] > 10
    last = [json.loads((run / "metrics.jsonl").read_text().splitlines()[-1]) for run in (one, two)]
    assert last[0]["lr"] == last[1]["lr"] < 0.005
    np.testing.assert_array_equal(np.load(one / "vectors.npy"), np.load(two / "vectors.npy"))


def test_replicas_under_torchrun_are_refused_in_one_line(small_corpus, tmp_path):
    """``--replicas`` copies the tables inside one process; under torchrun the ranks are the
    replicas: one line, said once, before training."""
    p = torchrun("train", str(small_corpus), "--output", str(tmp_path / "r"), *TRAIN, "--replicas", "2", check=False)
    assert p.returncode != 0
    line = "--replicas 2 copies the tables inside one process; under torchrun run more ranks instead"
    assert p.stderr.count(line) == 1, p.stderr[-3000:]
    assert not (tmp_path / "r" / "summary.json").exists()


def _replay_two_ranks(run, tmp_path, lr_scale: float, divide: float) -> np.ndarray:
    """One process replaying a 2-rank run that synced every row after every step: each rank's
    chunk (read with the rank's own CorpusStream) trained from the step's starting tables at the
    global word count's learning rate x ``lr_scale``; the tables become start + (sum of the two
    changes) / ``divide``. Returns the vectors and checks the number of steps."""
    from w2v_dist.corpus.shards import Shard
    from w2v_dist.model import Word2Vec
    from w2v_dist.training import LinearSchedule

    plan = json.loads((run / "plan.json").read_text())
    shards = [Shard(**{**s, "row_groups": tuple(s["row_groups"])}) for s in plan["shards"]]
    row_tokens = [[tuple(x) for x in s] for s in plan["row_tokens"]]
    vocab = Vocab.load(str(run / "vocab"))
    model = Word2Vec(vocab, 24, "sg", 1, "cpu", "numba", window=5, negative=5, threads=1)
    streams = [iter(CorpusStream(shards, str(run / "vocab"), TokenizerConfig(), seed=1, epochs=1, batch_words=1500,
                                 rank=r, world_size=2, cache_dir=str(tmp_path / "cache"), row_tokens=row_tokens))
               for r in (0, 1)]
    schedule = LinearSchedule(0.025, 1e-4, vocab.total_words)
    tables, words_done, steps = model.tables(), 0, 0
    while True:
        chunks = [next(s, None) for s in streams]
        if all(c is None for c in chunks):
            break
        words = sum(c.tokens.words for c in chunks if c is not None)
        lr0, lr1 = schedule(words_done) * lr_scale, schedule(words_done + words) * lr_scale
        start = {k: t.clone() for k, t in tables.items()}
        total = {k: torch.zeros_like(t) for k, t in tables.items()}
        for c in chunks:
            if c is None:
                continue
            for k, t in tables.items():
                t.copy_(start[k])
            model.train_chunk(c.tokens, lr0, lr1)
            for k, t in tables.items():
                total[k] += t - start[k]
        for k, t in tables.items():
            t.copy_(start[k] + total[k] / divide)
        words_done, steps = words_done + words, steps + 1
    assert steps == json.loads((run / "summary.json").read_text())["steps"] > 5
    return model.vectors()


def test_sync_step_is_the_sum_of_the_ranks_steps(small_corpus, tmp_path):
    """``--sync step`` (the exact mode) on 2 gloo ranks equals an independent replay in one
    process: each step, each rank's chunk trained from the step's starting tables, the tables
    become start + the sum of the two changes, at the global word count's learning rate.
    Guards: a step sync that averages or skips rows, a rank that trains from tables it did not
    share, the lr of a rank's own words; and the local mode with H = 1, every row, summed, is
    the same code path (bitwise equal)."""
    args = [*TRAIN, "--workers", "0", "--batch-words", "1500", "--log-every", "0"]
    exact, local = tmp_path / "exact", tmp_path / "local"
    torchrun("train", str(small_corpus), "--output", str(exact), *args, "--sync", "step")
    torchrun("train", str(small_corpus), "--output", str(local), *args, "--sync-every", "1", "--sync-rows",
             "100000000", "--sync-combine", "sum")
    got = np.load(exact / "vectors.npy")
    np.testing.assert_array_equal(got, np.load(local / "vectors.npy"))
    np.testing.assert_allclose(got, _replay_two_ranks(exact, tmp_path, 1.0, 1.0), rtol=0, atol=2e-5)


@pytest.mark.parametrize("flags, lr_scale, divide", [((), 2.0, 2.0), (("--sync-lr-scale", "1"), 1.0, 1.0)],
                         ids=["n-times-the-rate", "multiplier-short-of-n"])
def test_mean_combine_trains_every_rank_at_n_times_the_rate(small_corpus, tmp_path, flags, lr_scale, divide):
    """The default combine, ``mean``, with every row synced every step, equals the replay where
    each rank trains at 2 x the schedule's rate and the tables get the mean of the changes.
    Guards: the learning rate not scaled by the world size (rows move 1/N as far as one
    process moves them: analogy 0.07 against 0.12 at 2 ranks on gcide), a sum in place of the mean.

    Where the rate multiplier stops short of N (0.2 per update: CBOW past 4 ranks), ``mean``
    divides the summed changes by it, so a row one rank trained moves as one process would move it:
    here 2 ranks at a multiplier of 1 (the floor N / 2), which the replay sums at the plain rate.
    Guards: dividing by N there (CBOW at 8 ranks x 4: rows moved half their way, analogy 0.094
    against 0.114 on gcide)."""
    run = tmp_path / "mean"
    torchrun("train", str(small_corpus), "--output", str(run), *TRAIN, "--workers", "0", "--batch-words", "1500",
             "--log-every", "0", "--sync-every", "1", "--sync-rows", "100000000", *flags)
    np.testing.assert_allclose(np.load(run / "vectors.npy"), _replay_two_ranks(run, tmp_path, lr_scale, divide),
                               rtol=0, atol=2e-5)


def test_divergence_is_said_once_naming_the_rank(small_corpus, tmp_path):
    """Guards: every rank printing its own copy (8 ranks diverging at once printed 8 lines; before
    that, 8 copies of "on another rank"). Rank 2 of 3 has a NaN loss in step 3: all ranks stop at
    the next exchange, exit code 3, and rank 0 alone says where and what."""
    p = torchrun("train", str(small_corpus), "--output", str(tmp_path / "r"), *TRAIN, "--batch-words", "2000",
                 nproc=3, check=False, env={"W2V_DIST_FAULT": "diverge@loss:2:3"})
    assert p.returncode != 0 and "exitcode  : 3" in p.stderr, p.stderr[-3000:]
    errors = [line for line in p.stderr.splitlines() if line.startswith("w2v-dist: error: ")]
    assert len(errors) == 1 and errors[0].startswith("w2v-dist: error: training diverged at step "), errors
    assert "on rank 2 of 3, loss per example not finite" in errors[0], errors
    assert not (tmp_path / "r" / "summary.json").exists()


def test_ranks_started_with_different_settings_are_refused_naming_them(small_corpus, tmp_path):
    """Each node runs its own torchrun, and a flag that differs between them made collectives of
    different sizes: gloo aborted with 'Connection reset by peer' and no word on the flag (NCCL may
    hang). Here rank 1 gets another --dim (torchrun --no-python runs each rank's own command line)
    and --threads (a node's own cores, allowed): one line names the rank and the setting, nothing
    is written."""
    command = " ".join([shlex.quote(sys.executable), "-m", "w2v_dist", "train", shlex.quote(str(small_corpus)),
                        "--output", shlex.quote(str(tmp_path / "r")), *TRAIN[:-1], '"$((1 + RANK))"'])
    command = command.replace("--dim 24", '--dim "$((24 + 8 * RANK))"')
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                        "--no-python", "sh", "-c", f"exec {command}"], capture_output=True, text=True,
                       timeout=240, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    errors = [line for line in p.stderr.splitlines() if line.startswith("w2v-dist: error:")]
    assert p.returncode != 0 and errors == [
        "w2v-dist: error: the ranks were started with different settings (rank 1: dim 32 (rank 0: 24)); every "
        "rank must run the same command: on several nodes, give each node's torchrun the same flags and the "
        "same w2v_dist"], p.stderr[-3000:]
    assert not (tmp_path / "r").exists()


def test_a_memory_uri_under_torchrun_is_refused_in_one_line(small_corpus):
    """memory:// is each process's own: rank 1 could not find the vocabulary rank 0 wrote there."""
    p = torchrun("train", str(small_corpus), "--output", "memory://runs/r", *TRAIN, check=False)
    errors = [line for line in p.stderr.splitlines() if line.startswith("w2v-dist: error:")]
    assert p.returncode != 0 and errors == [
        "w2v-dist: error: --output memory://runs/r: memory:// is each process's own, and rank 0's is not rank 1's; "
        "several ranks need a place they all reach (a directory, a shared file system or an object store)"], p.stderr


def test_an_error_is_said_once_and_a_rank_s_own_names_the_rank(plain_corpus, tmp_path):
    """Guards: every rank printing the same error (8 ranks: 8 copies of one line). A bad flag, an
    unknown one and a corpus that is not there are the same on every rank: rank 0 says them, once.
    A shard with bytes that are not UTF-8, met by one rank's share of the vocabulary pass, stops
    every rank with it (not the others with a lost connection). A row group that cannot be read
    while training (an encoded corpus has no vocabulary pass): each rank that met it says so, naming
    itself (both share the row group's rows here)."""
    out = str(tmp_path / "r")
    for args in (("train", str(tmp_path / "nothing"), "--output", out, *TRAIN),
                 ("train", str(plain_corpus), "--output", out, *TRAIN, "--dim", "0"),
                 ("train", str(plain_corpus), "--output", out, *TRAIN, "--no-such-flag")):
        p = torchrun(*args, check=False)
        errors = [line for line in p.stderr.splitlines() if line.startswith("w2v-dist: error: ")]
        assert p.returncode != 0 and len(errors) == 1 and "[rank" not in errors[0], p.stderr[-3000:]
    corpus = tmp_path / "c"
    corpus.mkdir()
    for f in sorted(plain_corpus.glob("*.parquet")):
        (corpus / f.name).write_bytes(f.read_bytes())
    bad = corpus / "part-00002.parquet"
    raw = pa.array([b"plain words here"] * 100 + [b"bad \xff\xfe bytes here"], pa.binary())
    pq.write_table(pa.table({"text": raw.view(pa.string())}), bad)  # pyarrow does not validate
    p = torchrun("train", str(corpus), "--output", out, *TRAIN, check=False)
    errors = [line for line in p.stderr.splitlines() if line.startswith("w2v-dist: error: ")]
    assert p.returncode != 0 and len(errors) == 1, p.stderr[-3000:]
    assert f"{bad} row group 0: 1 row(s) are not valid UTF-8" in errors[0], errors
    assert "Connection closed" not in p.stderr and "[rank" not in errors[0], p.stderr[-3000:]  # all stopped with it
    # met by one rank while training (an encoded corpus has no vocabulary pass): that rank says it
    encoded = tmp_path / "e"
    cli("encode", str(plain_corpus), "--output", str(encoded), "--min-count", "3")
    broken = encoded / "part-00001.parquet"
    data = bytearray(broken.read_bytes())
    data[100:400] = bytes(300)  # the first row group's pages: the footer still reads
    broken.write_bytes(bytes(data))
    p = torchrun("train", str(encoded), "--output", out, *TRAIN, "--overwrite", check=False)
    errors = [line for line in p.stderr.splitlines() if line.startswith("w2v-dist: error: ")]
    assert p.returncode != 0 and 1 <= len(errors) <= 2 and all(str(broken) in line for line in errors), p.stderr[-3000:]
    assert all(line.endswith(("[rank 0]", "[rank 1]")) for line in errors) and len(set(errors)) == len(errors), errors


def test_mean_scales_the_rate_by_the_ranks_up_to_a_rate_of_0_2():
    """Guards: CBOW at 8 ranks x 0.05 (0.4 per rank) diverged on gcide; skip-gram at 8 x 0.025 did
    not. The multiplier stops where a rank's rate would pass 0.2, and --sync-lr-scale overrides it.
    The summed changes are divided by the multiplier, between N / 2 and N: N where the multiplier
    is N (the mean); CBOW at 16 ranks divided by 4 diverged, by 8 trained."""
    from w2v_dist.distributed import Dist
    from w2v_dist.sync import TableSync, auto_lr_scale, mean_divisor

    assert [auto_lr_scale(n, 0.025) for n in (1, 2, 4, 8, 16)] == [1, 2, 4, 8, 8]
    assert [auto_lr_scale(n, 0.05) for n in (2, 4, 8)] == [2, 4, 4]
    assert auto_lr_scale(8, 0.5) == 1
    tables = {"in": torch.zeros(4, 2)}
    assert TableSync(tables, Dist(world_size=8), alpha=0.05).lr_scale == 4
    assert TableSync(tables, Dist(world_size=8), alpha=0.05, lr_scale=6).lr_scale == 6
    assert TableSync(tables, Dist(world_size=8), combine="sum", alpha=0.05).lr_scale == 1
    assert [TableSync(tables, Dist(world_size=n), alpha=0.025).divisor for n in (2, 4, 8, 16, 32)] == [2, 4, 8, 8, 16]
    assert [TableSync(tables, Dist(world_size=n), alpha=0.05).divisor for n in (2, 4, 8, 16)] == [2, 4, 4, 8]
    assert [mean_divisor(8, s) for s in (1, 4, 6, 8, 16)] == [4, 4, 6, 8, 8]
