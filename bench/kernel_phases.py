"""What several deterministic kernel threads cost: the phases of one step (mark, the walk with
overlays, the overlays to changes, the merge) run one after the other on one core, against the
one-thread walk over the same chunks, drawn beforehand as a run's reader draws them.

    python bench/kernel_phases.py                  # sg and cbow, 2 threads' work, gcide's first 600,000 lines
    python bench/kernel_phases.py --threads 4 --models cbow
    python bench/kernel_phases.py --nothing-shared     # what locating every row costs, with no overlays

The phases are the kernel's own compiled functions (``_walk``, ``_to_delta``, ``_merge``) called
from Python step by step, as ``_train_chunk`` calls them inside its parallel regions: CPU seconds
of each, summed over the threads, so that cores contending for memory do not enter. A first pass
over one chunk compiles them out of the timing. Python's call per slice adds a few microseconds to
each phase.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.kernel import encoded_chunks  # noqa: E402
from bench.vs_gensim import DATA  # noqa: E402
from w2v_dist.kernels import numba_cpu as nc  # noqa: E402


def phases(k: nc.Fused, drawn: list[nc.Drawn], lr: float, nothing_shared: bool = False) -> dict[str, float]:
    """CPU seconds of each phase of ``k``'s deterministic steps over ``drawn``, one thread after
    the other (``_train_chunk``'s loop, serialized). ``nothing_shared``: every mark cleared after
    the mark pass, so the walk locates every row and finds none shared (what locating costs)."""
    T, V, kind = k.threads, k.V, k.kind
    times = dict.fromkeys(("mark", "walk with overlays", "overlays to changes", "merge"), 0.0)
    names = list(times)

    def walk(phase, t, s, tag, rate, arrays, slices):
        kept, kstart, reach, noff, negs = arrays
        nc._walk(kind, phase, (k.store_in, k.store_out, V, kept, kstart, reach, noff, negs, slices[s], slices[s + 1],
                               k.negative, np.float32(rate), k.neu1[t], k.neu1e[t], nc.SIGMOID, nc.NEG_LOG_SIGMOID, t,
                               T, k.marks_in[tag % 2], k.marks_out[tag % 2], tag, k.ov_in, k.ov_out, k.out[t]))

    for dr in drawn:
        ns = len(dr.slices) - 1
        for step in range((ns + T - 1) // T):
            k.tag += 1
            mine = [step * T + t for t in range(T) if step * T + t < ns]
            clock = [time.process_time()]
            for t, s in enumerate(mine):
                walk(nc.MARK, t, s, k.tag, 0.0, dr.arrays, dr.slices)
            if nothing_shared:
                k.marks_in[k.tag % 2][:] = -1
                k.marks_out[k.tag % 2][:] = -1
            clock.append(time.process_time())
            for t, s in enumerate(mine):
                walk(nc.SHARED, t, s, k.tag, lr, dr.arrays, dr.slices)
            clock.append(time.process_time())
            for t in range(T):
                nc._to_delta(k.store_in, V, k.ov_in, t)
                nc._to_delta(k.store_out, V, k.ov_out, t)
            clock.append(time.process_time())
            for m in range(T):
                nc._merge(k.store_in, V, k.ov_in, T, m)
                nc._merge(k.store_out, V, k.ov_out, T, m)
            for t in range(T):
                k.ov_in[2][t, 0] = 0
                k.ov_out[2][t, 0] = 0
            clock.append(time.process_time())
            for i, name in enumerate(names):
                times[name] += clock[i + 1] - clock[i]
    return times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus", default=str(DATA / "gcide_en.txt.gz"))
    p.add_argument("--lines", type=int, default=600_000)
    p.add_argument("--models", nargs="+", default=["sg", "cbow"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--nothing-shared", action="store_true",
                   help="clear the marks after the mark pass: the walk locates every row and finds none shared")
    a = p.parse_args()
    vocab, chunks = encoded_chunks(a.corpus, a.lines)
    sampling = (vocab.keep_prob, vocab.neg_prob, vocab.neg_alias)
    words = sum(len(c.ids) for c in chunks)
    print(f"{len(chunks)} chunks, {words:,} words, vocabulary {len(vocab):,}, d=100 window=5 negative=5; "
          f"{a.threads} threads' work, one after the other; CPU seconds")
    print("| model | one thread's walk | mark | walk with overlays | overlays to changes | merge | all | all / one thread |")
    print("|---|---|---|---|---|---|---|---|")
    for model in a.models:
        kernels = [nc.Fused(len(vocab), 100, threads, model, 5, 5) for threads in (1, a.threads)]
        drawn = []
        for k in kernels:
            k.table_in[:] = (np.random.default_rng(1).random(k.table_in.shape, np.float32) - 0.5) / 100
            k.table_out[:] = 0
            drawn.append([k.draw(c.ids, c.starts, i, *sampling) for i, c in enumerate(chunks)])
        phases(kernels[1], drawn[1][:1], 0.0)  # compiles the phases' functions for these arrays
        kernels[0].train(chunks[0].ids, chunks[0].starts, 0, 0.0, 0.0, *sampling, drawn[0][0])
        start = time.process_time()
        for i, c in enumerate(chunks):
            kernels[0].train(c.ids, c.starts, i, 0.02, 0.02, *sampling, drawn[0][i])
        one = time.process_time() - start
        got = phases(kernels[1], drawn[1], 0.02, a.nothing_shared)
        total = sum(got.values())
        print(f"| {model} | {one:.2f} | " + " | ".join(f"{x:.2f}" for x in got.values())
              + f" | {total:.2f} | {total / one:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
