"""The fused kernel alone: words/s and examples/s of ``Fused.train`` over chunks of gcide already
encoded in memory (no reader, no Python loop around it but one call per chunk), for several
settings in the same run, best of ``--reps``.

    python bench/kernel.py                                          # sg and cbow, 1 and 2 threads
    python bench/kernel.py --models sg sg-pairs --configs 1:1024 2:1024 2:256 --reps 5
    python bench/kernel.py --models sg cbow --configs 2:1024:hogwild  # --nondeterministic

``--models``: ``sg`` (negatives shared per centre word, the default), ``sg-pairs``
(``--no-share-negatives``: drawn per example, as word2vec.c), ``cbow``. ``--configs``:
``threads:slice_words[:hogwild]``.

Two timings of each: the draws made inline, in the kernel's thread (``Fused.train`` alone), and
the training alone on chunks drawn beforehand (``Fused.draw``), as in a run, whose reader thread
draws the next chunks while the kernel trains (docs/training.md); and the draws' own time.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.vs_gensim import DATA  # noqa: E402
from w2v_dist.config import TokenizerConfig  # noqa: E402
from w2v_dist.corpus.dataset import Tokens, split_pieces  # noqa: E402
from w2v_dist.corpus.tokenize import encode, tokenize  # noqa: E402
from w2v_dist.kernels.numba_cpu import Fused  # noqa: E402
from w2v_dist.prepare import read_text  # noqa: E402
from w2v_dist.vocab import Counter, Vocab  # noqa: E402


def encoded_chunks(corpus: str, lines: int) -> tuple[Vocab, list[Tokens]]:
    """The first ``lines`` lines of ``corpus``: its vocabulary (``--min-count 5``, ``--sample
    1e-3``) and its token ids in chunks of 10,000 words, in memory."""
    import collections
    cfg = TokenizerConfig()
    text = pa.concat_arrays(list(read_text(corpus, "text", None, collections.defaultdict(int)))).slice(0, lines)
    counter = Counter()
    counter.add(tokenize(text, cfg)[0])
    vocab = Vocab.build(counter.result(), 5, None, 1e-3, raw_tokens=counter.tokens)
    return vocab, [Tokens.of(piece, 0) for piece in split_pieces(encode(text, vocab.words, cfg), 10_000)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus", default=str(DATA / "gcide_en.txt.gz"))
    p.add_argument("--models", nargs="+", default=["sg", "cbow"])
    p.add_argument("--configs", nargs="+", default=["1:1024", "2:1024"])
    p.add_argument("--lines", type=int, default=300_000, help="lines of the corpus to encode")
    p.add_argument("--reps", type=int, default=3)
    a = p.parse_args()
    vocab, chunks = encoded_chunks(a.corpus, a.lines)
    words = sum(len(c.ids) for c in chunks)
    print(f"{len(chunks)} chunks, {words:,} words, vocabulary {len(vocab):,}, d=100 window=5 negative=5")
    print("| model | threads | slice words | mode | best s, draws inline | words/s | examples/s "
          "| best s, drawn ahead | words/s | drawing alone, words/s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for model in a.models:
        for conf in a.configs:
            threads, slice_words, *mode = conf.split(":")
            hogwild = mode == ["hogwild"]
            k = Fused(len(vocab), 100, int(threads), model.split("-")[0], 5, 5, int(slice_words), 1000,
                      share_negatives=model == "sg", nondeterministic=hogwild)
            k.table_in[:] = (np.random.default_rng(1).random(k.table_in.shape, np.float32) - 0.5) / 100
            k.table_out[:] = 0
            k.train(chunks[0].ids[:100], np.array([0, 100]), 1, 0.0, 0.0, vocab.keep_prob, vocab.neg_prob,
                    vocab.neg_alias)  # the first call's one-off costs out of the timing
            best, ahead, drawing, examples = float("inf"), float("inf"), float("inf"), 0
            sampling = (vocab.keep_prob, vocab.neg_prob, vocab.neg_alias)
            for r in range(a.reps):
                t0, examples = time.perf_counter(), 0
                for i, c in enumerate(chunks):
                    examples += k.train(c.ids, c.starts, i + 1000 * r, 0.02, 0.02, *sampling)[2]
                best = min(best, time.perf_counter() - t0)
                t0 = time.perf_counter()
                drawn = [k.draw(c.ids, c.starts, i + 1000 * r, *sampling) for i, c in enumerate(chunks)]
                drawing = min(drawing, time.perf_counter() - t0)
                t0 = time.perf_counter()
                for i, c in enumerate(chunks):
                    k.train(c.ids, c.starts, i + 1000 * r, 0.02, 0.02, *sampling, drawn[i])
                ahead = min(ahead, time.perf_counter() - t0)
                del drawn
            print(f"| {model} | {threads} | {slice_words} | {'hogwild' if hogwild else 'deterministic'} | "
                  f"{best:.2f} | {words / best:,.0f} | {examples / best:,.0f} | {ahead:.2f} | {words / ahead:,.0f} | "
                  f"{words / drawing:,.0f} |", flush=True)


if __name__ == "__main__":
    main()
