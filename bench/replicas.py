"""Two cores in one process without the overlays: replicas of the tables, trained apart and averaged.

docs/training.md ("What several deterministic threads cost"): two deterministic kernel threads do
2.1-2.4x the work of one, so on 2 cores they train no faster than one thread. Several ranks do not
pay that: each trains its own copy of the tables with the one-thread kernel and the copies are
averaged every so often (local SGD, docs/distributed.md), and 2 ranks lose nothing measurable
against one. This measures that design inside one process, as a candidate for the kernel's
threads: ``R`` replicas, each the one-thread fused kernel on its own tables and its own contiguous
share of the corpus (as ranks get theirs), trained at the same time in ``R`` threads (the kernel
releases the GIL), every replica at ``R`` times the rate (the ``mean`` rule's multiplier), and every
``--every`` steps all replicas set to the mean of their tables (the whole tables: more often than
the product's prefix schedule, so the quality is an upper bound for it; in a fixed order, so a run
is repeatable). The corpus is encoded in memory beforehand and each chunk's draws are made inline:
no reader, so the times are the kernel's and the syncs', for ``R`` = 1 and the others in the same
run.

    python bench/replicas.py --models sg cbow --replicas 1 2 --seeds 1 2 3
    python bench/replicas.py --models cbow sg --product   # and the product's Fused(replicas=R) beside it
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.kernel import encoded_chunks  # noqa: E402
from bench.vs_gensim import DATA, evaluate  # noqa: E402
from w2v_dist.kernels.numba_cpu import Fused  # noqa: E402
from w2v_dist.vectors import Vectors  # noqa: E402


def train(vocab, chunks, model: str, replicas: int, every: int, epochs: int, seed: int, dim: int = 100,
          product: bool = False) -> dict:
    alpha = 0.025 if model == "sg" else 0.05
    scale = min(replicas, 0.2 / alpha)
    kernels = [Fused(len(vocab), dim, 1, model, 5, 5, 0, 1000) for _ in range(replicas)]
    init = ((np.random.default_rng(seed).random((len(vocab), dim), np.float32) * 2 - 1) / dim).astype(np.float32)
    for k in kernels:
        k.table_in[:] = init
        k.table_out[:] = 0.0
    sampling = (vocab.keep_prob, vocab.neg_prob, vocab.neg_alias)
    kernels[0].train(chunks[0].ids[:100], np.array([0, 100]), 1, 0.0, 0.0, *sampling)  # loaded before the clock
    kernels[0].table_in[:] = init
    kernels[0].table_out[:] = 0.0
    n = len(chunks)
    shares = [chunks[r * n // replicas:(r + 1) * n // replicas] for r in range(replicas)]
    keys = [[r * n // replicas + i for i in range(len(s))] for r, s in enumerate(shares)]
    total = epochs * sum(len(c.ids) for c in chunks)
    done, loss, examples, sync_s, steps = 0, 0.0, 0, 0.0, max(len(s) for s in shares)
    pool = ThreadPoolExecutor(replicas) if replicas > 1 else None
    product_kernel, merged, drawn_ahead = None, [], []
    if product:
        product_kernel = Fused(len(vocab), dim, 1, model, 5, 5, 0, 1000, replicas=replicas)
        product_kernel.table_in[:] = init
        product_kernel.table_out[:] = 0.0
        product_kernel.broadcast()
        kernels = [product_kernel]
        for step in range(steps):  # the step's chunks as one, as the reader would hand them over
            parts = [shares[r][step] for r in range(replicas) if step < len(shares[r])]
            ids = np.concatenate([c.ids for c in parts])
            offsets = np.cumsum([0] + [len(c.ids) for c in parts])
            starts = np.concatenate([c.starts[:-1] + o for c, o in zip(parts, offsets)] + [offsets[-1:]])
            merged.append((ids, starts))
    t0 = time.perf_counter()
    for epoch in range(epochs):
        for step in range(steps):
            jobs = [(r, shares[r][step], keys[r][step]) for r in range(replicas) if step < len(shares[r])]
            words = sum(len(c.ids) for _, c, _ in jobs)
            lr0 = alpha - (alpha - 1e-4) * done / total
            lr1 = alpha - (alpha - 1e-4) * (done + words) / total

            def run(job):
                r, c, key = job
                return kernels[r].train(c.ids, c.starts, epoch * 10_000_000 + key, lr0 * scale, lr1 * scale, *sampling)

            if product:  # as --replicas does it: one chunk of the step's words, cut between the replicas
                results = [product_kernel.train(*merged[step], epoch * 10_000_000 + step, lr0 * scale, lr1 * scale,
                                                *sampling, drawn_ahead.pop(0) if drawn_ahead else None)]
            else:
                results = list(pool.map(run, jobs)) if pool else [run(j) for j in jobs]
            loss += sum(x[0] for x in results)
            examples += sum(x[2] for x in results)
            done += words
            last = epoch == epochs - 1 and step == steps - 1
            if replicas > 1 and ((step + 1) % every == 0 or step == steps - 1 or last):
                t = time.perf_counter()
                if product:
                    product_kernel.average()
                    sync_s += time.perf_counter() - t
                    continue
                for name in ("table_in", "table_out"):
                    mean = getattr(kernels[0], name).copy()
                    for k in kernels[1:]:
                        mean += getattr(k, name)
                    mean *= np.float32(1.0 / replicas)
                    for k in kernels:
                        getattr(k, name)[:] = mean
                sync_s += time.perf_counter() - t
    elapsed = time.perf_counter() - t0
    if pool:
        pool.shutdown()
    quality = evaluate(Vectors(vocab.words.to_pylist(), kernels[0].table_in.copy()))
    return {"seconds": elapsed, "words_per_s": done / elapsed, "sync_s": sync_s, "loss": loss / max(examples, 1),
            **quality}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus", default=str(DATA / "gcide_en.txt.gz"))
    p.add_argument("--lines", type=int, default=10_000_000, help="lines of the corpus (default: all)")
    p.add_argument("--models", nargs="+", default=["sg", "cbow"])
    p.add_argument("--replicas", nargs="+", type=int, default=[1, 2])
    p.add_argument("--every", type=int, default=64, help="steps of 10,000 words between averages")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--seeds", nargs="+", type=int, default=[1])
    p.add_argument("--product", action="store_true",
                   help="the replicas as --replicas trains them (Fused(replicas=R): one chunk a step, cut between "
                        "them, draws inline), beside the bench's own")
    a = p.parse_args()
    vocab, chunks = encoded_chunks(a.corpus, a.lines)
    print(f"{len(chunks)} chunks, {sum(len(c.ids) for c in chunks):,} words, vocabulary {len(vocab):,}; "
          f"d=100 window=5 negative=5, {a.epochs} epochs, averaged every {a.every} steps", flush=True)
    print("| model | seed | replicas | seconds | words/s | speed against 1 | seconds in averages | analogy | WS-353 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for model in a.models:
        for seed in a.seeds:
            base = None
            for r in a.replicas:
                for product in ([False, True] if a.product and r > 1 else [False]):
                    out = train(vocab, chunks, model, r, a.every, a.epochs, seed, product=product)
                    base = base or out["words_per_s"]
                    print(f"| {model} | {seed} | {r}{' (Fused)' if product else ''} | {out['seconds']:.1f} | "
                          f"{out['words_per_s']:,.0f} | {out['words_per_s'] / base:.2f}x | {out['sync_s']:.2f} | "
                          f"{out['analogy']:.4f} | {out['ws353']:.4f} |", flush=True)


if __name__ == "__main__":
    main()
