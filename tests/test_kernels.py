"""The fused kernel against a plain reference, its determinism, its sampling statistics, and the
torch reference kernel against autograd."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from w2v_dist.kernels import numba_cpu as K
from w2v_dist.kernels import reference
from w2v_dist.pairs import NegativeSampler


def _chunk(V=60, n=900, seed=0, sentence=(3, 40)):
    rng = np.random.default_rng(seed)
    ids = rng.zipf(1.3, n).clip(max=V) - 1  # frequent rows recur, as in text
    ids = ids.astype(np.int32)
    cuts = [0]
    while cuts[-1] < n:
        cuts.append(min(n, cuts[-1] + int(rng.integers(*sentence))))
    return ids, np.array(cuts, np.int64)


def _sampling(V, seed=0, keep_all=False):
    rng = np.random.default_rng(seed + 1)
    counts = np.sort(rng.integers(1, 1000, V))[::-1].astype(np.float64)
    keep = np.ones(V, np.float32) if keep_all else np.minimum(1, 300 / counts).astype(np.float32)
    prob, alias = NegativeSampler.build(counts ** 0.75)
    return keep, prob, alias


def _fused(V, d, threads, model, window=3, negative=4, slice_words=64, share=True, seed=0):
    k = K.Fused(V, d, threads, model, window, negative, slice_words, 64, share)
    rng = np.random.default_rng(seed)
    k.table_in[:] = (rng.random((V, d), np.float32) - 0.5) / d * 20  # larger than word2vec.c's: saturates sooner
    k.table_out[:] = (rng.random((V, d), np.float32) - 0.5) / d * 20
    return k


def _next(state):
    s, z = K._next(np.uint64(state))
    return np.uint64(s), np.uint64(z)


def reference_walk(W_in, W_out, ids, starts, sentences, key, lr, keep, prob, alias, window, negative, cbow, share,
                   con=None):
    """word2vec.c's loop in plain Python (float64 arithmetic, the kernel's random stream and sigmoid
    table): every update is applied before the next example is scored. Returns (loss, examples).
    ``con``: two arrays (input rows, output rows) to which each update adds its contraction,
    ``lr * sigmoid'(f) * |h|^2`` (the kernel's merge weighs shared rows by it)."""
    loss, examples = 0.0, 0

    def score(f, label):
        if f > K.MAX_EXP:
            return label - 1.0, (f if label == 0 else 0.0)
        if f > -K.MAX_EXP:
            i = int((f + K.MAX_EXP) * (K.EXP_TABLE_SIZE / K.MAX_EXP / 2))
            s = float(K.SIGMOID[i])
            return label - s, float(K.NEG_LOG_SIGMOID[i] if label == 1 else K.NEG_LOG_SIGMOID[K.EXP_TABLE_SIZE - 1 - i])
        return float(label), (-f if label == 1 else 0.0)

    for s in sentences:
        state = np.uint64(K.sentence_seed(np.uint64(key), s))
        kept = []
        for p in range(starts[s], starts[s + 1]):
            state, z = _next(state)
            if K._uniform(z) < keep[ids[p]]:
                kept.append(int(ids[p]))
        for i, centre in enumerate(kept):
            state, z = _next(state)
            reach = 1 + int(K._below(z, window))
            ctx = [j for j in range(max(0, i - reach), min(len(kept), i + reach + 1)) if j != i]
            if share:
                negs = []
                for _ in range(negative):
                    state, z = _next(state)
                    negs.append(int(K._negative(z, prob, alias)))
            if cbow:
                if not ctx:
                    continue
                groups = [ctx]
            else:
                groups = [[j] for j in ctx]
            for group in groups:
                h = np.mean([W_in[kept[j]] for j in group], axis=0)
                e = np.zeros_like(h)
                acc = 0.0
                for k in range(negative + 1):
                    if k == 0:
                        target, label = centre, 1
                    else:
                        if share:
                            target = negs[k - 1]
                        else:
                            state, z = _next(state)
                            target = int(K._negative(z, prob, alias))
                        label = 0
                        if target == centre:
                            continue
                    g, term = score(float(h @ W_out[target]), label)
                    loss += term
                    if con is not None:
                        sigma = label - g
                        con[1][target] += lr * sigma * (1 - sigma) * float(h @ h)
                        acc += sigma * (1 - sigma) * float(W_out[target] @ W_out[target])
                    e += g * lr * W_out[target]
                    W_out[target] += g * lr * h
                for j in group:
                    W_in[kept[j]] += e
                    if con is not None:
                        con[0][kept[j]] += lr * acc / len(group)
                examples += 1
    return loss, examples


@pytest.mark.parametrize("model,share", [("sg", True), ("sg", False), ("cbow", True)])
def test_one_thread_is_word2vec_c_sequential_order(model, share):
    V, d, lr = 40, 8, 0.05
    ids, starts = _chunk(V)
    keep, prob, alias = _sampling(V)
    k = _fused(V, d, 1, model, share=share)
    W_in, W_out = k.table_in.astype(np.float64), k.table_out.astype(np.float64)
    loss, terms, examples = k.train(ids, starts, 7, lr, lr, keep, prob, alias)
    ref_loss, ref_examples = reference_walk(W_in, W_out, ids, starts, range(len(starts) - 1), 7, lr, keep, prob,
                                            alias, 3, 4, model == "cbow", share)
    assert examples == ref_examples > 100
    assert loss == pytest.approx(ref_loss, rel=1e-3)
    np.testing.assert_allclose(k.table_in, W_in, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(k.table_out, W_out, rtol=1e-3, atol=1e-4)


def merge_scale(cons):
    """The kernel's merge, in float64: each row's summed change is scaled by (1 - exp(-sum c)) /
    sum(1 - exp(-c_t)) over the threads' contractions c_t (1 where no thread's update contracted)."""
    total, parts = sum(cons), sum(-np.expm1(-c) for c in cons)
    return np.where(parts > 1e-12, -np.expm1(-total) / np.maximum(parts, 1e-300), 1.0)


@pytest.mark.parametrize("model", ["sg", "cbow"])
def test_threads_merge_their_slices_in_order(model):
    """Several threads: each slice of a step is word2vec.c's sequential loop against the tables as
    they were at the step's start (plus the thread's own updates), and each row's changes are added
    up, scaled by the row's contraction (w2v_dist/kernels/numba_cpu.py). The reference replays
    exactly that with copies; the chunk's frequent rows saturate, so the scales are far from 1."""
    V, d, lr, T = 40, 8, 0.05, 3
    ids, starts = _chunk(V, n=1200)
    keep, prob, alias = _sampling(V)
    k = _fused(V, d, T, model, slice_words=100)
    W_in, W_out = k.table_in.astype(np.float64), k.table_out.astype(np.float64)
    slices = K.slice_bounds(ids, starts, keep, 100, T)
    assert (len(slices) - 1) % T == 0 and len(slices) - 1 >= 2 * T
    k.train(ids, starts, 11, lr, lr, keep, prob, alias)
    scales = []
    for step in range(0, len(slices) - 1, T):
        base_in, base_out = W_in.copy(), W_out.copy()
        d_in, d_out = np.zeros_like(W_in), np.zeros_like(W_out)
        con_in, con_out = [], []
        for s in range(step, step + T):
            a_in, a_out = base_in.copy(), base_out.copy()
            con = (np.zeros(V), np.zeros(V))
            reference_walk(a_in, a_out, ids, starts, range(slices[s], slices[s + 1]), 11, lr, keep, prob, alias, 3, 4,
                           model == "cbow", True, con)
            d_in += a_in - base_in
            d_out += a_out - base_out
            con_in.append(con[0])
            con_out.append(con[1])
        s_in, s_out = merge_scale(con_in), merge_scale(con_out)
        scales.append(s_out.min())
        for scale in (s_in, s_out):  # between the mean and the sum
            assert ((scale >= 1 / T - 1e-9) & (scale <= 1 + 1e-9)).all()
        W_in, W_out = base_in + s_in[:, None] * d_in, base_out + s_out[:, None] * d_out
    assert min(scales) < 0.8  # the merge did scale some rows back: the test sees it
    np.testing.assert_allclose(k.table_in, W_in, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(k.table_out, W_out, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("threads", [1, 2, 4])
def test_same_bits_every_run_for_a_thread_count(threads):
    """Guards: a race (a thread writing a row another reads in the same step) or a merge whose
    order depends on scheduling. 4 threads on any machine: numba runs the slices of a step on as
    many OS threads as it has, the result may not depend on it."""
    V, d = 200, 16
    ids, starts = _chunk(V, n=20_000, sentence=(5, 60))
    keep, prob, alias = _sampling(V)
    runs = []
    for _ in range(2):
        k = _fused(V, d, threads, "sg", slice_words=256)
        for c in range(3):
            k.train(ids, starts, 100 + c, 0.05, 0.04, keep, prob, alias)
        runs.append((k.table_in.copy(), k.table_out.copy()))
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    np.testing.assert_array_equal(runs[0][1], runs[1][1])


@pytest.mark.parametrize("model,share,threads", [("sg", True, 1), ("sg", False, 2), ("cbow", True, 1),
                                                 ("cbow", True, 3)])
def test_draws_made_in_another_thread_train_the_same_bits(model, share, threads):
    """Guards: the draws a reader's thread makes ahead (``Fused.draw``, while the tables train on
    the chunk before) differing from those the kernel makes for itself: stale slices or sentence
    starts, buffers shared between the two threads. Every chunk drawn ahead in another thread,
    while the one before trains, must give the bits of drawing inline; draws of a kernel with
    other settings are refused."""
    import concurrent.futures

    V, d = 200, 16
    chunks = [_chunk(V, n=6000, seed=c, sentence=(5, 60)) for c in range(4)]
    keep, prob, alias = _sampling(V)
    inline, ahead = _fused(V, d, threads, model, share=share), _fused(V, d, threads, model, share=share)
    for c, (ids, starts) in enumerate(chunks):
        inline.train(ids, starts, 50 + c, 0.05, 0.04, keep, prob, alias)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        drawn = pool.submit(ahead.draw, *chunks[0], 50, keep, prob, alias)
        for c, (ids, starts) in enumerate(chunks):
            this = drawn.result()
            if c + 1 < len(chunks):
                drawn = pool.submit(ahead.draw, *chunks[c + 1], 51 + c, keep, prob, alias)
            ahead.train(ids, starts, 50 + c, 0.05, 0.04, keep, prob, alias, this)
    np.testing.assert_array_equal(inline.table_in, ahead.table_in)
    np.testing.assert_array_equal(inline.table_out, ahead.table_out)
    other = _fused(V, d, threads, model, window=2, share=share)
    with pytest.raises(ValueError, match="other settings"):
        other.train(*chunks[0], 50, 0.05, 0.04, keep, prob, alias, ahead.draw(*chunks[0], 50, keep, prob, alias))


def test_examples_do_not_depend_on_the_thread_count():
    V = 100
    ids, starts = _chunk(V, n=5000)
    keep, prob, alias = _sampling(V)
    counts = {T: _fused(V, 8, T, "sg", slice_words=200).train(ids, starts, 3, 0.01, 0.01, keep, prob, alias)[1:]
              for T in (1, 2, 3)}
    assert counts[1] == counts[2] == counts[3]


def test_first_loss_is_ln2_per_term_and_nan_stays_visible():
    V, d = 30, 8
    ids, starts = _chunk(V, n=300)
    keep, prob, alias = _sampling(V)
    k = _fused(V, d, 1, "sg")
    k.table_out[:] = 0.0
    loss, terms, examples = k.train(ids[:50], np.array([0, 50]), 1, 0.0, 0.0, keep, prob, alias)
    assert loss / terms == pytest.approx(math.log(2), rel=3e-3)  # lr 0: every score is 0 (table cells 0.012 wide)
    k.table_in[3] = np.nan
    loss, *_ = k.train(ids, starts, 2, 0.025, 0.025, keep, prob, alias)
    assert math.isnan(loss)


def test_window_sizes_are_uniform_in_1_to_window():
    """Guards: the window draw (``1 + below(z, window)``) off by one or skewed. Through the kernel:
    with no subsampling, one long sentence and skip-gram, the examples per word are E[2 * reach]
    = window + 1 away from the ends; the draw itself is checked with a chi-square test."""
    V, window = 50, 5
    rng = np.random.default_rng(3)
    ids = rng.integers(0, V, 1000).astype(np.int32)
    keep, prob, alias = _sampling(V, keep_all=True)
    k = K.Fused(V, 8, 1, "sg", window, 2, 4096, 1000)
    examples = sum(k.train(ids, np.array([0, 1000]), key, 0.0, 0.0, keep, prob, alias)[2] for key in range(40))
    per_word = examples / (40 * 1000)
    edge = sum(2 * window - (min(i, window) + min(999 - i, window)) for i in range(1000)) / 1000  # lost at the ends
    assert abs(per_word - (window + 1 - edge * 0.5)) < 0.05
    state, draws = np.uint64(99), []
    for _ in range(60_000):
        state, z = _next(state)
        draws.append(1 + K._below(z, window))
    observed = np.bincount(draws, minlength=window + 1)[1:]
    assert observed.sum() == 60_000 and min(draws) == 1
    chi2 = ((observed - 12_000) ** 2 / 12_000).sum()
    assert chi2 < 20.5  # 4 degrees of freedom, p = 0.0004


def test_negatives_follow_unigram_to_the_three_quarters():
    """Guards: the exponent of the noise distribution (0.75) or the alias draw. The kernel's own
    draw against the closed form counts**0.75 / sum, chi-square."""
    from w2v_dist.vocab import Vocab
    import pyarrow as pa

    words = [f"w{i}" for i in range(40)]
    counts = (np.arange(40, 0, -1) ** 2).astype(np.int64)
    vocab = Vocab.build(pa.table({"word": words, "count": counts}), min_count=1, sample=0)
    expected = vocab.counts.astype(np.float64) ** 0.75
    expected /= expected.sum()
    n = 200_000
    state, draws = np.uint64(5), np.empty(n, np.int64)
    for i in range(n):
        state, z = _next(state)
        draws[i] = K._negative(z, vocab.neg_prob, vocab.neg_alias)
    observed = np.bincount(draws, minlength=40)
    chi2 = ((observed - n * expected) ** 2 / (n * expected)).sum()
    assert chi2 < 80  # 39 degrees of freedom: p ~ 1e-4
    flat = np.full(40, 1 / 40)  # and it is not a wrong exponent (1.0 or 0.5 differ by far more)
    for wrong in (1.0, 0.5):
        w = vocab.counts.astype(np.float64) ** wrong
        assert ((observed - n * w / w.sum()) ** 2 / (n * w / w.sum())).sum() > 1000
    assert ((observed - n * flat) ** 2 / (n * flat)).sum() > 1000


def test_subsampling_keeps_words_at_their_keep_probability():
    """Guards: the subsampling draw compared the wrong way or against the wrong table. Windows are
    drawn over the kept words (word2vec.c), so with CBOW every kept word of a long sentence is one
    example: examples / words is the keep probability (sd 0.0016 at 100k words)."""
    V = 4
    keep = np.array([0.2, 0.5, 0.9, 1.0], np.float32)
    prob, alias = NegativeSampler.build(np.ones(V))
    ids = np.zeros(100_000, np.int32)
    starts = np.arange(0, 100_001, 1000, dtype=np.int64)
    for w, p in enumerate(keep):
        ids[:] = w
        k = K.Fused(V, 4, 1, "cbow", 1, 1, 100_000, 1000)
        examples = k.train(ids, starts, 9, 0.0, 0.0, keep, prob, alias)[2]
        assert abs(examples / 100_000 - p) < 0.01


def test_reference_kernel_is_the_loss_gradient():
    """The torch reference update equals -lr * autograd gradient of the word2vec loss."""
    V, d, lr = 20, 8, 0.1
    g = torch.Generator().manual_seed(1)
    W_in = torch.randn(V, d, generator=g) * 0.5
    W_out = torch.randn(V, d, generator=g) * 0.5
    rng = np.random.default_rng(0)
    inputs, outputs = (torch.from_numpy(rng.integers(0, V, 40)) for _ in range(2))
    negatives = torch.from_numpy(rng.integers(0, V, (40, 3)))
    a, b = W_in.clone().requires_grad_(), W_out.clone().requires_grad_()
    h = a[inputs]
    pos = (b[outputs] * h).sum(-1)
    neg = torch.einsum("bkd,bd->bk", b[negatives], h)
    valid = (negatives != outputs[:, None]).float()
    loss = -(torch.nn.functional.logsigmoid(pos).sum() + (torch.nn.functional.logsigmoid(-neg) * valid).sum())
    loss.backward()
    new_in, new_out = W_in.clone(), W_out.clone()
    got = reference.sg_step(new_in, new_out, inputs, outputs, negatives, lr)
    assert float(got) == pytest.approx(float(loss.detach()), rel=1e-5)
    torch.testing.assert_close(new_in, W_in - lr * a.grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(new_out, W_out - lr * b.grad, rtol=1e-4, atol=1e-6)


def test_reference_cbow_kernel_is_word2vec_c_s_gradient():
    """The torch reference CBOW update: the output rows move by -lr * the autograd gradient of the
    loss at h = the mean of the present context rows, and every present context row by -lr * dL/dh
    (word2vec.c gives each the whole of it, not its share of the mean). Guards: absent slots (-1,
    added as zeros to row 0 so that no boolean mask makes a GPU wait) changing row 0."""
    V, d, lr, C = 20, 8, 0.1, 4
    g = torch.Generator().manual_seed(2)
    W_in = torch.randn(V, d, generator=g) * 0.5
    W_out = torch.randn(V, d, generator=g) * 0.5
    rng = np.random.default_rng(1)
    contexts = torch.from_numpy(rng.integers(1, V, (30, C)))  # row 0 never a context: only absent slots touch it
    contexts[rng.random((30, C)) < 0.3] = -1
    contexts[:, 0] = torch.from_numpy(rng.integers(1, V, 30))  # at least one present
    outputs, negatives = torch.from_numpy(rng.integers(0, V, 30)), torch.from_numpy(rng.integers(0, V, (30, 3)))
    present = contexts >= 0
    b = W_out.clone().requires_grad_()
    h = ((W_in[contexts.clamp(min=0)] * present[:, :, None]).sum(1) / present.sum(1, keepdim=True)).requires_grad_()
    pos = (b[outputs] * h).sum(-1)
    neg = torch.einsum("bkd,bd->bk", b[negatives], h)
    valid = (negatives != outputs[:, None]).float()
    loss = -(torch.nn.functional.logsigmoid(pos).sum() + (torch.nn.functional.logsigmoid(-neg) * valid).sum())
    loss.backward()
    want_in = W_in.clone()
    for e in range(30):
        for c in contexts[e][present[e]].tolist():
            want_in[c] -= lr * h.grad[e]
    new_in, new_out = W_in.clone(), W_out.clone()
    got = reference.cbow_step(new_in, new_out, contexts, outputs, negatives, lr)
    assert float(got) == pytest.approx(float(loss.detach()), rel=1e-5)
    torch.testing.assert_close(new_out, W_out - lr * b.grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(new_in, want_in, rtol=1e-4, atol=1e-6)
    assert torch.equal(new_in[0], W_in[0])


def test_slice_bounds_are_numpys():
    """Guards: the compiled cut of a chunk into slices (which sets each slice's learning rate and,
    with threads, which rows are shared) drifting from its plain definition: slice c of count
    begins at the first sentence with at least c/count of the expected kept words before it."""
    rng = np.random.default_rng(0)
    for _ in range(500):
        V, n = int(rng.integers(1, 50)), int(rng.integers(1, 3000))
        keep = rng.random(V).astype(np.float32) * (rng.random() < 0.8)
        ids = rng.integers(0, V, n).astype(np.int32)
        starts = np.unique(np.r_[0, rng.integers(0, n, int(rng.integers(0, 200))), n]).astype(np.int64)
        for slice_words, threads in ((100, 1), (1024, 2), (37, 3), (1, 4)):
            count = threads * max(1, round(n / (threads * slice_words)))
            work = np.r_[0.0, np.cumsum(keep[ids], dtype=np.float64)][starts]
            cuts = np.searchsorted(work[:-1], work[-1] * np.arange(count) / count, side="left")
            expected = np.unique(np.r_[cuts, len(starts) - 1])
            np.testing.assert_array_equal(K.slice_bounds(ids, starts, keep, slice_words, threads), expected)



def test_the_warm_up_compiles_what_a_run_calls(small_corpus, tmp_path):
    """Guards: the kernel's warm-up (a thread beside the vocabulary pass, so that the first step
    does not wait 0.5 s for numba) calling the kernel with other argument types than a run does:
    numba would then compile or load a second version at the first step, and the warm-up would
    save nothing. After the warm-up and real runs, each compiled function has one signature."""
    from w2v_dist import train
    from w2v_dist.kernels import _load_fused

    _load_fused()  # what the warm-up thread runs
    train(str(small_corpus), str(tmp_path / "run"), model="cbow", dim=8, epochs=1, threads=1)
    train(str(small_corpus), str(tmp_path / "run2"), model="sg", dim=8, epochs=1, threads=2, workers=0)
    assert len(K._train_chunk.signatures) == 1, K._train_chunk.signatures
    assert len(K._slice_bounds.signatures) == 1, K._slice_bounds.signatures
    assert len(K._draw.signatures) == 1, K._draw.signatures


@pytest.mark.parametrize("model,share", [("sg", True), ("sg", False), ("cbow", True)])
def test_replicas_train_their_runs_of_slices_apart_and_average_in_order(model, share):
    """``replicas=2``: each replica is the one-thread kernel on its own copy of the tables and its
    own contiguous run of the chunk's slices, and :meth:`Fused.average` leaves every replica with
    the mean, summed in replica order. Against two one-thread kernels given the whole chunk's draws
    (each restricted to its run of slices; the replicas draw only their own runs) and numpy's mean:
    bit for bit. Guards: a replica drawing its sentences under other keys, a replica training the
    other's slices or both, a replica on the shared tables, an average in another order or of one
    table only, a replica left out of the average."""
    V, d, lr0, lr1 = 60, 8, 0.05, 0.04
    keep, prob, alias = _sampling(V)
    k = K.Fused(V, d, 1, model, 3, 4, 64, 64, share, replicas=2)
    rng = np.random.default_rng(3)
    k.table_in[:] = (rng.random((V, d), np.float32) - 0.5) / d * 20
    k.table_out[:] = (rng.random((V, d), np.float32) - 0.5) / d * 20
    k.broadcast()
    singles = [_fused(V, d, 1, model, share=share) for _ in range(2)]
    for one in singles:
        one.table_in[:], one.table_out[:] = k.table_in, k.table_out
    for key, seed in ((7, 0), (8, 1)):
        ids, starts = _chunk(V, n=1500, seed=seed)
        drawn = k.draw(ids, starts, key, keep, prob, alias)
        n = len(drawn.slices) - 1
        assert n >= 4
        loss, terms, examples = k.train(ids, starts, key, lr0, lr1, keep, prob, alias, drawn)
        got = [one.train(ids, starts, key, lr0, lr1, keep, prob, alias,  # the whole chunk's draws, a run of slices
                         one.draw(ids, starts, key, keep, prob, alias)._replace(
                             slices=drawn.slices[r * n // 2:(r + 1) * n // 2 + 1]))
               for r, one in enumerate(singles)]
        assert examples == sum(g[2] for g in got) > 100 and terms == sum(g[1] for g in got)
        assert loss == pytest.approx(sum(g[0] for g in got), rel=1e-12)
        for r, one in enumerate(singles):  # apart: each replica is its single kernel, bit for bit
            np.testing.assert_array_equal(k.replicas_in[r], one.table_in)
            np.testing.assert_array_equal(k.replicas_out[r], one.table_out)
        k.average()
        for name in ("table_in", "table_out"):
            mean = (getattr(singles[0], name) + getattr(singles[1], name)) * np.float32(0.5)
            for one in singles:
                getattr(one, name)[:] = mean
        for r in range(2):
            np.testing.assert_array_equal(k.replicas_in[r], singles[0].table_in)
            np.testing.assert_array_equal(k.replicas_out[r], singles[0].table_out)
