"""What mini-batching costs in quality: w2v_dist's summed mini-batch kernel at several batch sizes
against word2vec.c's own update order (one example at a time, every update applied before the
next example is scored), on the same examples, and gensim with one worker thread (the same
sequential order, no Hogwild races) on the same tokens.

    python bench/batch_probe.py --model cbow --batches 0 64 256 1024 --seeds 1 2     # 0 = sequential
    python bench/batch_probe.py --model sg --batches 0 4096 --gensim --seeds 1 2 3

The examples come from w2v_dist's own vocabulary, tokenizer, subsampling, windows and negative
sampler (``w2v_dist.pairs.make_examples``), read in corpus order; every batch size and the
sequential reference see the same examples for a seed. The learning rate decays linearly over the
words read, as in the trainer. Prints one markdown table of analogy accuracy and WS-353 Spearman
(mean over seeds, each seed after it).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from numba import njit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.vs_gensim import DATA, evaluate, make_inputs  # noqa: E402
from w2v_dist.config import TokenizerConfig  # noqa: E402
from w2v_dist.corpus.tokenize import encode, tokenize  # noqa: E402
from w2v_dist.kernels import numba_cpu  # noqa: E402
from w2v_dist.pairs import make_examples  # noqa: E402
from w2v_dist.vectors import Vectors  # noqa: E402
from w2v_dist.vocab import Counter, Vocab  # noqa: E402

ROWS_PER_CHUNK = 20_000
MIN_ALPHA = 1e-4  # the trainer's default --min-alpha


@njit(fastmath=True, cache=True)
def sequential(W_in, W_out, inputs, outputs, negatives, lr):
    """word2vec.c's order: each example is scored against the weights left by the previous one.
    ``inputs`` is (B, C) context ids padded with -1 (SG: C = 1)."""
    B, C = inputs.shape
    d, K = W_in.shape[1], negatives.shape[1]
    h = np.zeros(d, np.float32)
    e = np.zeros(d, np.float32)
    for b in range(B):
        n = 0
        h[:] = 0.0
        e[:] = 0.0
        for c in range(C):
            if inputs[b, c] >= 0:
                n += 1
                h += W_in[inputs[b, c]]
        if n == 0:
            continue
        h /= n
        for k in range(K + 1):
            t = outputs[b] if k == 0 else negatives[b, k - 1]
            if k > 0 and t == outputs[b]:
                continue
            s = 0.0
            for j in range(d):
                s += W_out[t, j] * h[j]
            g = lr * ((1.0 if k == 0 else 0.0) - 1.0 / (1.0 + math.exp(-s)))
            for j in range(d):
                e[j] += g * W_out[t, j]
                W_out[t, j] += g * h[j]
        for c in range(C):
            if inputs[b, c] >= 0:
                W_in[inputs[b, c]] += e


def probe(text, vocab: Vocab, model: str, batch: int, seed: int, epochs: int, alpha: float, dim: int) -> dict:
    cfg = TokenizerConfig()
    g = torch.Generator().manual_seed(seed)  # the trainer's init: U(-0.5/d, 0.5/d), output zeros
    W_in = ((torch.rand(len(vocab), dim, generator=g) - 0.5) / dim).numpy()
    W_out = np.zeros_like(W_in)
    step = numba_cpu.sg_step if model == "sg" else numba_cpu.cbow_step
    rng = np.random.default_rng(seed)
    total, done, t0 = epochs * vocab.total_words, 0, time.perf_counter()
    for _ in range(epochs):
        for start in range(0, len(text), ROWS_PER_CHUNK):
            tok = encode(text.slice(start, ROWS_PER_CHUNK), vocab.words, cfg)
            ex = make_examples(tok, model, 5, vocab.keep_prob, vocab.sampler, 5, rng)
            n, size = len(ex), batch or 1000
            for a in range(0, n, size):
                lr = alpha - (alpha - MIN_ALPHA) * (done + tok.raw_words * a / max(n, 1)) / total
                sl = slice(a, a + size)
                if batch:
                    step(W_in, W_out, ex.inputs[sl], ex.outputs[sl], ex.negatives[sl], lr)
                else:
                    inputs = ex.inputs[sl] if model == "cbow" else ex.inputs[sl, None]
                    sequential(W_in, W_out, inputs, ex.outputs[sl], ex.negatives[sl], np.float32(lr))
            done += tok.raw_words
    words = vocab.words.to_pylist()
    return {"seconds": time.perf_counter() - t0, **evaluate(Vectors(words, W_in))}


def gensim_one_worker(tok_path: str, model: str, seed: int, epochs: int, alpha: float, dim: int) -> dict:
    from gensim.models import Word2Vec
    from gensim.models.word2vec import LineSentence

    t0 = time.perf_counter()
    m = Word2Vec(LineSentence(tok_path), vector_size=dim, window=5, negative=5, sample=1e-3, min_count=5,
                 sg=int(model == "sg"), workers=1, seed=seed, alpha=alpha, min_alpha=MIN_ALPHA, epochs=epochs)
    return {"seconds": time.perf_counter() - t0, **evaluate(Vectors(list(m.wv.index_to_key), m.wv.vectors))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus", default=str(DATA / "gcide_en.txt.gz"))
    p.add_argument("--lines", type=int, default=None)
    p.add_argument("--model", default="cbow", choices=["sg", "cbow"])
    p.add_argument("--batches", type=int, nargs="+", default=[0, 256], help="examples per step; 0 = sequential")
    p.add_argument("--gensim", action="store_true", help="also gensim with workers=1")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--dim", type=int, default=100)
    a = p.parse_args()
    alpha = 0.025 if a.model == "sg" else 0.05
    shards, tok_path, _ = make_inputs(a.corpus, tempfile.mkdtemp(prefix="w2v-probe-"), a.lines)
    text = pq.read_table(shards, columns=["text"])["text"].combine_chunks()
    counter = Counter()
    counter.add(tokenize(text, TokenizerConfig())[0])
    vocab = Vocab.build(counter.result(), min_count=5, sample=1e-3)

    results: dict[str, list[dict]] = {}
    for seed in a.seeds:
        for b in a.batches:
            label = "sequential (word2vec.c order)" if b == 0 else f"--batch-pairs {b}"
            results.setdefault(label, []).append(probe(text, vocab, a.model, b, seed, a.epochs, alpha, a.dim))
            print(label, seed, results[label][-1], file=sys.stderr, flush=True)
        if a.gensim:
            label = "gensim, workers=1"
            results.setdefault(label, []).append(gensim_one_worker(tok_path, a.model, seed, a.epochs, alpha, a.dim))
            print(label, seed, results[label][-1], file=sys.stderr, flush=True)

    print(f"\n{a.model}, {a.epochs} epochs, d={a.dim}, alpha={alpha}; seeds {' '.join(map(str, a.seeds))}\n")
    print("| update order | analogy (mean) | WS-353 (mean) | per seed (analogy / WS-353) |")
    print("|---|---|---|---|")
    for label, rs in results.items():
        per = "; ".join(f"{r['analogy']:.4f} / {r['ws353']:.4f}" for r in rs)
        print(f"| {label} | {statistics.mean(r['analogy'] for r in rs):.4f} | "
              f"{statistics.mean(r['ws353'] for r in rs):.4f} | {per} |")


if __name__ == "__main__":
    main()
