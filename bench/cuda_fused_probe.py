"""What a fused CUDA kernel could reach: a probe, not the product.

docs/scaling.md projects GPU ranks at an assumed 10M words/s; our CUDA path (the torch reference
kernel) measured 114k on an H200. This probe is the other end: skip-gram with negative sampling as
one numba-cuda kernel per epoch, word2vec.c's loop run by every warp over its own contiguous slice
of the corpus (lanes split the vector's dimensions; a dot product is a warp reduction), the warps
racing on shared rows as word2vec.c's threads do (Hogwild: not repeatable). Subsampling is drawn
on the host per epoch; windows and negatives in the kernel (a 64-bit xorshift per warp; negatives
from a 10M-slot unigram^0.75 table, word2vec.c's). The learning rate falls with each warp's
progress through its slice (the warps move together). It trains gcide, times the epochs, and
writes the vectors for ``w2v-dist eval``.

    python bench/cuda_fused_probe.py SHARDS --out vectors.txt --epochs 5 [--warps-per-block 4]
    NUMBA_ENABLE_CUDASIM=1 python bench/cuda_fused_probe.py --check   # one warp against a plain loop

What it leaves out (so its speed is an upper bound for this design, and its quality must be read
beside the CPU kernel's): CBOW, sentence-aware slice boundaries (a window never crosses a
sentence, but a slice may start mid-sentence), the reader (the corpus is in memory), checkpoints.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

if not hasattr(np, "row_stack"):  # numba-cuda 0.x calls it; numpy 2.5 removed it (seen on the H200's image)
    np.row_stack = np.vstack
from numba import config, cuda, float32, int32, uint64  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DIM_PER_LANE = 4  # d <= 128
TABLE = 10_000_000


@cuda.jit(device=True, inline=True)
def xorshift(s):
    s ^= (s << uint64(13)) & uint64(0xFFFFFFFFFFFFFFFF)
    s ^= s >> uint64(7)
    s ^= (s << uint64(17)) & uint64(0xFFFFFFFFFFFFFFFF)
    return s


if config.ENABLE_CUDASIM:  # the simulator has no shuffles: shared memory, blocks of one warp only (--check)
    @cuda.jit(device=True)
    def warp_sum(x):
        buf = cuda.shared.array(32, float32)
        lane = cuda.threadIdx.x
        cuda.syncthreads()
        buf[lane] = x
        cuda.syncthreads()
        total = float32(0.0)
        for k in range(32):
            total += buf[k]
        return total
else:
    @cuda.jit(device=True, inline=True)
    def warp_sum(x):
        for off in (16, 8, 4, 2, 1):
            x += cuda.shfl_xor_sync(0xFFFFFFFF, x, off)
        return x


@cuda.jit
def sg_epoch(ids, sent, n, syn0, syn1, table, window, negative, alpha0, epoch, epochs, seed, loss_out):
    """Every warp: word2vec.c's skip-gram loop over ids[lo:hi] (its slice)."""
    lane = cuda.threadIdx.x % 32
    warp = (cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x) // 32
    warps = (cuda.gridDim.x * cuda.blockDim.x) // 32
    d = syn0.shape[1]
    lo = (n * warp) // warps
    hi = (n * (warp + 1)) // warps
    s = uint64(seed) * uint64(0x9E3779B97F4A7C15) + uint64(warp + 1) * uint64(0xBF58476D1CE4E5B9) + uint64(epoch)
    s = xorshift(xorshift(s | uint64(1)))
    h = cuda.local.array(DIM_PER_LANE, float32)
    e = cuda.local.array(DIM_PER_LANE, float32)
    w = cuda.local.array(DIM_PER_LANE, float32)
    loss = float32(0.0)
    span = max(hi - lo, 1)
    for i in range(lo, hi):
        progress = (epoch + (i - lo) / span) / epochs
        alpha = float32(max(alpha0 * (1.0 - progress), alpha0 * 1e-4))
        s = xorshift(s)
        b = int32(s % uint64(window))
        centre = ids[i]
        for j in range(i - window + b, i + window - b + 1):
            if j == i or j < 0 or j >= n or sent[j] != sent[i]:
                continue
            ctx = ids[j]
            for k in range(DIM_PER_LANE):
                c = lane + 32 * k
                h[k] = syn0[ctx, c] if c < d else float32(0.0)
                e[k] = float32(0.0)
            for t in range(negative + 1):
                if t == 0:
                    target, label = centre, float32(1.0)
                else:
                    s = xorshift(s)
                    target = table[(s >> uint64(16)) % uint64(table.shape[0])]
                    if target == centre:
                        continue
                    label = float32(0.0)
                part = float32(0.0)
                for k in range(DIM_PER_LANE):
                    c = lane + 32 * k
                    w[k] = syn1[target, c] if c < d else float32(0.0)
                    part += h[k] * w[k]
                f = warp_sum(part)
                if f > 6.0:
                    sig = float32(1.0)
                elif f < -6.0:
                    sig = float32(0.0)
                else:
                    sig = float32(1.0 / (1.0 + math.exp(-f)))
                if lane == 0:
                    loss -= math.log(max(sig if label > 0 else 1.0 - sig, 1e-7))
                g = (label - sig) * alpha
                for k in range(DIM_PER_LANE):
                    c = lane + 32 * k
                    if c < d:
                        e[k] += g * w[k]
                        syn1[target, c] = w[k] + g * h[k]
            for k in range(DIM_PER_LANE):
                c = lane + 32 * k
                if c < d:
                    syn0[ctx, c] = h[k] + e[k]
    if lane == 0:
        cuda.atomic.add(loss_out, 0, loss)


def plain_sg_epoch(ids, sent, syn0, syn1, table, window, negative, alpha0, epoch, epochs, seed) -> float:
    """The same loop for one warp, in plain Python on numpy (the check's reference)."""
    M = (1 << 64) - 1

    def xs(s):
        s ^= (s << 13) & M
        s ^= s >> 7
        s ^= (s << 17) & M
        return s

    n = len(ids)
    s = (seed * 0x9E3779B97F4A7C15 + 1 * 0xBF58476D1CE4E5B9 + epoch) & M
    s = xs(xs(s | 1))
    loss = 0.0
    for i in range(n):
        alpha = np.float32(max(alpha0 * (1.0 - (epoch + i / n) / epochs), alpha0 * 1e-4))
        s = xs(s)
        b = s % window
        for j in range(i - window + b, i + window - b + 1):
            if j == i or j < 0 or j >= n or sent[j] != sent[i]:
                continue
            h = syn0[ids[j]].copy()
            e = np.zeros_like(h)
            for t in range(negative + 1):
                if t == 0:
                    target, label = ids[i], 1.0
                else:
                    s = xs(s)
                    target = table[(s >> 16) % len(table)]
                    if target == ids[i]:
                        continue
                    label = 0.0
                w = syn1[target].copy()
                f = float(np.dot(h, w))
                sig = 1.0 if f > 6 else 0.0 if f < -6 else 1.0 / (1.0 + math.exp(-f))
                loss -= math.log(max(sig if label > 0 else 1.0 - sig, 1e-7))
                g = np.float32((label - sig) * alpha)
                e += g * w
                syn1[target] = w + g * h
            syn0[ids[j]] = h + e
    return loss


def check() -> None:
    """One warp on a small random corpus: the kernel (in numba's CUDA simulator, or on a GPU)
    against the plain loop, same draws; float tolerance (the warp sums in another order)."""
    rng = np.random.default_rng(0)
    V, d, n = 50, 40, 300
    ids = rng.integers(0, V, n).astype(np.int32)
    sent = (np.arange(n) // 37).astype(np.int32)
    table = rng.integers(0, V, 1000).astype(np.int32)
    syn0 = ((rng.random((V, d)) - 0.5) / d).astype(np.float32)
    syn1 = (rng.random((V, d)) * 0.1).astype(np.float32)
    a0, a1 = syn0.copy(), syn1.copy()
    loss_ref = plain_sg_epoch(ids, sent, a0, a1, table, 3, 2, 0.05, 0, 1, 7)
    g0, g1, out = cuda.to_device(syn0), cuda.to_device(syn1), cuda.to_device(np.zeros(1, np.float32))
    sg_epoch[1, 32](cuda.to_device(ids), cuda.to_device(sent), n, g0, g1, cuda.to_device(table), 3, 2, 0.05, 0, 1, 7, out)
    b0, b1 = g0.copy_to_host(), g1.copy_to_host()
    print("loss", loss_ref, float(out.copy_to_host()[0]))
    print("max |syn0 diff|", float(np.abs(a0 - b0).max()), "max |syn1 diff|", float(np.abs(a1 - b1).max()),
          "moved", float(np.abs(a0 - syn0).max()))
    assert np.allclose(a0, b0, atol=1e-5) and np.allclose(a1, b1, atol=1e-5)
    assert abs(loss_ref - float(out.copy_to_host()[0])) < 1e-3 * loss_ref
    print("check: the kernel is the plain loop")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("shards", nargs="?")
    p.add_argument("--out", default="probe_vectors.txt")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--dim", type=int, default=100)
    p.add_argument("--window", type=int, default=5)
    p.add_argument("--negative", type=int, default=5)
    p.add_argument("--alpha", type=float, default=0.025)
    p.add_argument("--warps-per-block", type=int, default=4)
    p.add_argument("--blocks-per-sm", type=int, default=8)
    p.add_argument("--blocks", type=int, default=0, help="blocks in all (0: --blocks-per-sm x the GPU's SMs)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--check", action="store_true")
    a = p.parse_args()
    if a.check:
        return check()
    import pyarrow.parquet as pq

    from w2v_dist.config import TokenizerConfig
    from w2v_dist.corpus.tokenize import encode, tokenize
    from w2v_dist.vocab import Counter, Vocab

    t0 = time.perf_counter()
    text = pq.read_table(a.shards, columns=["text"]).column("text").combine_chunks()
    cfg = TokenizerConfig()
    counter = Counter()
    counter.add(tokenize(text, cfg)[0])
    vocab = Vocab.build(counter.result(), 5, None, 1e-3, raw_tokens=counter.tokens)
    tok = encode(text, vocab.words, cfg)
    ids_all, sent_all = tok.ids.astype(np.int32), tok.sentence.astype(np.int32)
    V, N = len(vocab), len(ids_all)
    p75 = vocab.counts.astype(np.float64) ** 0.75
    table = np.searchsorted(np.cumsum(p75 / p75.sum()), (np.arange(TABLE) + 0.5) / TABLE).astype(np.int32).clip(max=V - 1)
    print(f"corpus {N:,} words, vocabulary {V:,}; host preparation {time.perf_counter() - t0:.1f} s", flush=True)
    rng = np.random.default_rng(a.seed)
    init = ((rng.random((V, a.dim), dtype=np.float32) * 2 - 1) / a.dim).astype(np.float32)
    syn0, syn1 = cuda.to_device(init), cuda.to_device(np.zeros((V, a.dim), np.float32))
    d_table = cuda.to_device(table)
    blocks = a.blocks or cuda.get_current_device().MULTIPROCESSOR_COUNT * a.blocks_per_sm
    threads = 32 * a.warps_per_block
    print(f"{blocks} blocks of {threads} threads ({blocks * a.warps_per_block:,} warps; "
          f"{N // (blocks * a.warps_per_block):,} words a warp)", flush=True)
    total_train, total_words = 0.0, 0
    for epoch in range(a.epochs):
        keep = rng.random(N, dtype=np.float32) < vocab.keep_prob[ids_all]
        ids, sent = cuda.to_device(ids_all[keep]), cuda.to_device(sent_all[keep])
        loss = cuda.to_device(np.zeros(1, np.float32))
        cuda.synchronize()
        t = time.perf_counter()
        sg_epoch[blocks, threads](ids, sent, int(keep.sum()), syn0, syn1, d_table, a.window, a.negative, a.alpha,
                                  epoch, a.epochs, a.seed, loss)
        cuda.synchronize()
        dt = time.perf_counter() - t
        if epoch > 0:  # the first launch compiles
            total_train, total_words = total_train + dt, total_words + N
        print(f"epoch {epoch}: {dt:.3f} s, {N / dt:,.0f} corpus words/s, loss sum {float(loss.copy_to_host()[0]):.4g}",
              flush=True)
    if total_words:
        print(f"epochs 1-{a.epochs - 1}: {total_words / total_train:,.0f} corpus words/s", flush=True)
    vec = syn0.copy_to_host()
    words = vocab.words.to_pylist()
    with open(a.out, "w", encoding="utf-8") as f:
        f.write(f"{V} {a.dim}\n")
        for word, row in zip(words, vec):
            f.write(word + " " + " ".join(f"{x:.6f}" for x in row) + "\n")
    print(f"vectors in {a.out}; finite: {bool(np.isfinite(vec).all())}")


if __name__ == "__main__":
    main()
