"""The fused CPU kernel (numba): word2vec.c's training loop over token ids.

A chunk's random draws are made first, apart (:meth:`Fused.draw`, :func:`_draw`): the words
subsampling keeps, each kept word's window and its negatives, compact (a few integers a word, no
example pairs). The training run's reader thread makes them for the next chunks while the kernel
trains this one, so the kernel's thread only computes (2026-11-27: 1.14x CBOW's training loop on
one thread, docs/training.md); with the draws given or not, the same bits.

A chunk of token ids (sentences marked by their start offsets) is cut at sentence starts into
*slices* of about ``slice_words`` words. A slice is trained the way word2vec.c trains a sentence:
subsample, draw each word's window, and for every (context, centre) pair score the target and
``negative`` negatives and update the rows in place, one pair after another, so that every
update sees the ones before it (a row that recurs is self-correcting: its sigmoid saturates).

Slices run ``threads`` at a time (a *step*), each on its own thread, without races and without
atomics, so that a run gives the same bits every time for a given ``threads``:

1. *mark*: each thread walks its slice's draws and marks every row it will touch;
2. *train*: a row only this thread touches in this step is updated in the table in place; a row
   that other threads touch too is read and written in the thread's private overlay (its value at
   the step's start, copied at first touch, plus this thread's own updates);
3. *merge*: the overlay rows' changes are added to the tables, thread 0's first, each row's sum
   scaled by how far its updates had already saturated (below).

Sequential inside a slice, one step of staleness across threads for shared rows only. With one
thread there is no mark, no overlay and no merge: word2vec.c's order exactly.

**The merge.** Each thread's change of a shared row was computed from the row as it was at the
step's start. Where those changes are small they add up, as sequential updates would; where a
frequent row's updates saturate within a slice (every thread moved it most of the way to where
its sigmoids balance), the plain sum moves it ``k`` times as far for ``k`` threads, and the next
step overshoots further: 4 threads diverged on a 50-word vocabulary, 8 on gcide, 16 on manpages
and wordnet even with 128-word slices. So each thread also sums, for each shared row, the
*contraction* of its updates, ``c = sum(lr * sigmoid'(f) * |h|^2)`` (``h`` the vector the row was
moved along: the context vector for an output row, the output rows for an input row, divided by
the window for CBOW). For a quadratic loss with that curvature, ``k`` threads' slices run one after
the other would move the row ``1 - exp(-sum c)`` of the way to its optimum, each alone
``1 - exp(-c_t)``: the merge adds the changes' sum times ``(1 - exp(-sum c)) / sum(1 - exp(-c_t))``,
which is 1 for rows far from saturation (the sum) and ``1/k`` for saturated ones (the mean), and
never more than the sum nor less than the mean: stable by construction, whatever the number of
threads (``|h|^2`` bounds the curvature along any one direction, so the scale errs towards the
mean).

Every random draw of a sentence comes from a splitmix64 stream keyed by (chunk key, sentence), so
the examples (subsampling, windows, negatives) do not depend on how the chunk is sliced, nor on
the thread count.

The sigmoid is word2vec.c's table (``EXP_TABLE_SIZE`` entries over [-MAX_EXP, MAX_EXP]; beyond
it the gradient is ``label - 0/1``); so is the loss ``-log sigmoid``, continued linearly beyond the
table so that a diverging run shows a growing loss.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

EXP_TABLE_SIZE = 1000
MAX_EXP = 6.0
# fast-math without "no NaNs / no infs": a NaN must stay a NaN so that the divergence guard sees it
FASTMATH = {"reassoc", "contract", "arcp", "nsz", "afn"}

_x = (np.arange(EXP_TABLE_SIZE, dtype=np.float64) / EXP_TABLE_SIZE * 2 - 1) * MAX_EXP
SIGMOID = (1.0 / (1.0 + np.exp(-_x))).astype(np.float32)  # word2vec.c's expTable
# -log sigmoid at the cells' midpoints: symmetric, so cell 999 - i holds -log sigmoid(-x)
NEG_LOG_SIGMOID = np.log1p(np.exp(-(_x + MAX_EXP / EXP_TABLE_SIZE))).astype(np.float32)



def _prange_only() -> dict:
    """Parallel loops only where ``prange`` says: numba's automatic parallelisation would turn
    array statements into loops of their own and could fuse them with a prange of the same length
    (``count[:] = 0`` after the merge loop over threads ran inside it)."""
    return {"comprehension": False, "reduction": False, "inplace_binop": False, "setitem": False,
            "numpy": False, "stencil": False, "fusion": False, "prange": True}


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_LOW32 = np.uint64(0xFFFFFFFF)


@njit(inline="always")
def _next(state):
    """splitmix64: ``(new state, 64 random bits)``."""
    state = state + _GOLDEN
    z = state
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return state, z ^ (z >> np.uint64(31))


@njit(inline="always")
def _uniform(z):
    """A float32 in [0, 1) from the top 24 bits."""
    return np.float32(z >> np.uint64(40)) * np.float32(1.0 / 16777216.0)


@njit(inline="always")
def _below(z, n):
    """An integer in [0, n) from the low 32 bits (multiply-shift, n < 2**32)."""
    return np.int64(((z & _LOW32) * np.uint64(n)) >> np.uint64(32))


@njit(inline="always")
def _negative(z, neg_prob, neg_alias):
    """One draw from the unigram^0.75 alias table: index from the low bits, coin from the high."""
    i = _below(z, neg_prob.shape[0])
    return i if _uniform(z) < neg_prob[i] else np.int64(neg_alias[i])


@njit(inline="always")
def sentence_seed(key, s):
    """The random stream of sentence ``s`` of the chunk keyed ``key``: the examples do not depend
    on how the chunk is cut into slices (nor, then, on the thread count)."""
    _, z = _next(np.uint64(key) ^ (np.uint64(s + 1) * _M2))
    return z


@njit(inline="always")
def _score(f, label, lr, sig, nls):
    """word2vec.c's ``g`` for dot product ``f``, and the example's loss term."""
    if f > MAX_EXP:
        return (label - 1.0) * lr, (f if label == 0.0 else 0.0)
    if f > -MAX_EXP:
        i = int((f + MAX_EXP) * (EXP_TABLE_SIZE / MAX_EXP / 2))
        if label == 0.0:  # -log sigmoid(-f)
            return -sig[i] * lr, nls[EXP_TABLE_SIZE - 1 - i]
        return (1.0 - sig[i]) * lr, nls[i]
    # below the table, or NaN (which must stay visible in the loss)
    return label * lr, ((-f if label == 1.0 else 0.0) if f == f else f)


# --- rows: in the table, or in the thread's overlay --------------------------------------------
# Each table lives in a *store*: its V rows, then ``rows_per_thread`` overlay rows per thread
# (``Scratch.store``), so that a row is always one index into one array: no branch between two
# arrays in the inner loops (which cost 40% when it was there).


@njit(inline="always")
def _locate(S, V, R, r, t, threads, marks, tag, where, rows, count, overlay):
    """The store row where thread ``t`` reads and writes table row ``r`` in this step: the table's
    own (one thread, or a row no other thread touches in this step), or the thread's overlay copy,
    made at first touch."""
    if not overlay:
        return np.int64(r)
    for u in range(threads):
        if u != t and marks[u, r] == tag:
            i = where[t, r]
            if i < 0:
                i = count[t, 0]
                count[t, 0] = i + 1
                where[t, r] = i
                rows[t, i] = r
                S[V + t * R + i] = S[r]
            return np.int64(V + t * R + i)
    return np.int64(r)


@intrinsic
def _prefetch(typingctx, arr, row, col):
    """A hint to bring the cache line of ``arr[row, col]`` in (LLVM's ``llvm.prefetch``: read,
    keep in all levels, data). Changes no result."""
    sig = types.void(arr, row, col)

    def codegen(context, builder, signature, args):
        aryty = signature.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        inds = [context.cast(builder, a, t, types.intp) for a, t in zip(args[1:], signature.args[1:])]
        ptr = cgutils.get_item_pointer2(context, builder, data=ary.data, shape=cgutils.unpack_tuple(builder, ary.shape),
                                        strides=cgutils.unpack_tuple(builder, ary.strides), layout=aryty.layout,
                                        inds=inds, wraparound=False, boundscheck=False)
        i8p, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]),
                                            "llvm.prefetch.p0")
        builder.call(fn, [builder.bitcast(ptr, i8p), i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return sig, codegen


@njit(inline="always")
def _prefetch_row(S, r):
    """Every cache line of row ``r`` of ``S`` (float32: 16 to a 64-byte line)."""
    for x in range(0, S.shape[1], 16):
        _prefetch(S, r, x)


@njit(fastmath=FASTMATH, cache=True, nogil=True)
def _draw(cbow, share, ids, starts, key, keep, neg_prob, neg_alias, window, negative):
    """Every random draw of a chunk, in word2vec.c's order within each sentence (whose stream is
    keyed by (chunk key, sentence)): the words subsampling keeps, each kept word's reach (window
    ``b`` in ``[1, window]``) and its negatives: ``negative`` per centre word when they are shared
    or CBOW's (none for a CBOW centre word with no context word: it trains no example), else
    ``negative`` per example, example after example. Returns ``(kept, kstart, reach, noff, negs)``:
    sentence ``s``'s kept words are ``kept[kstart[s]:kstart[s + 1]]``, kept word ``w``'s negatives
    ``negs[noff[w]:noff[w + 1]]``."""
    return _draw_sentences(cbow, share, ids, starts, 0, len(starts) - 1, key, keep, neg_prob, neg_alias, window,
                           negative)


@njit(fastmath=FASTMATH, cache=True, nogil=True)
def _draw_sentences(cbow, share, ids, starts, first, end, key, keep, neg_prob, neg_alias, window, negative):
    """:func:`_draw` for the chunk's sentences ``first..end`` only: the same draws as the whole
    chunk's for them (each sentence's stream is keyed by its index in the chunk), numbered from
    ``first`` (sentence ``first + s``'s kept words are ``kept[kstart[s]:kstart[s + 1]]``)."""
    N, S = starts[end] - starts[first], end - first
    kept = np.empty(N, np.int32)
    kstart = np.empty(S + 1, np.int64)
    reach = np.empty(N, np.int32)
    noff = np.empty(N + 1, np.int64)
    negs = np.empty(max(1, N * negative * (1 if share or cbow else 2 * window)), np.int32)
    m, q = 0, 0
    for s in range(S):
        a0 = m
        kstart[s] = a0
        state = sentence_seed(key, first + s)
        for p in range(starts[first + s], starts[first + s + 1]):
            w = ids[p]
            state, z = _next(state)
            if _uniform(z) < keep[w]:
                kept[m] = w
                m += 1
        n = m - a0
        for i in range(n):
            noff[a0 + i] = q
            state, z = _next(state)
            r = 1 + _below(z, window)
            reach[a0 + i] = r
            context = min(n, i + r + 1) - max(0, i - r) - 1
            draws = negative if share or cbow else context * negative
            if cbow and context < 1:
                draws = 0
            for k in range(draws):
                state, z = _next(state)
                negs[q] = _negative(z, neg_prob, neg_alias)
                q += 1
    kstart[S] = m
    noff[m] = q
    return kept[:m], kstart, reach[:m], noff[:m + 1], negs[:q]


def _make_walk(train: bool, cbow: bool, overlay: bool, share: bool):
    """The slice walk for one combination of flags, compiled with them as constants: a runtime
    flag's dead branches slowed the one-thread path by 40%. (The walks are closures over bools,
    which numba's on-disk cache keys by value; a closure over functions would never hit it.)"""

    @njit(fastmath=FASTMATH, cache=True)
    def walk(S_in, S_out, V, kept, kstart, reach_of, noff, negs, s0, s1, negative, lr, neu1, neu1e, sig, nls, t,
             threads, marks_in, marks_out, tag, ov_in, ov_out, out):
        """Walk sentences ``s0..s1`` of the chunk, drawn (:func:`_draw`). ``train=False``: only mark
        the rows the walk touches. ``train=True``: train, adding (loss, loss terms, examples) into
        ``out``."""
        where_i, rows_i, count_i, R_in, con_i = ov_in
        where_o, rows_o, count_o, R_out, con_o = ov_out
        d = S_in.shape[1]
        loss, terms, examples = 0.0, 0, 0
        for s in range(s0, s1):
            a0 = kstart[s]
            n = kstart[s + 1] - a0
            for i in range(n):
                nb = noff[a0 + i]  # this centre word's negatives: negs[nb], negs[nb + 1], ...
                reach = np.int64(reach_of[a0 + i])
                if train and i + 1 < n:
                    # the next centre word's rows, fetched into the cache while this one trains: its
                    # output rows (when its negatives are its own) and the context row its window adds
                    # (the tables of a large vocabulary are memory-bound without it)
                    if share or cbow:
                        _prefetch_row(S_out, kept[a0 + i + 1])
                        for q in range(noff[a0 + i + 1], noff[a0 + i + 2]):
                            _prefetch_row(S_out, negs[q])
                    ahead = reach_of[a0 + i + 1]
                    if i + 1 + ahead < n:
                        _prefetch_row(S_in, kept[a0 + i + 1 + ahead])
                centre = kept[a0 + i]
                lo, hi = max(0, i - reach), min(n, i + reach + 1)
                if cbow:
                    if hi - lo < 2:
                        continue
                    if train:
                        for x in range(d):
                            neu1[x] = 0.0
                        for j in range(lo, hi):
                            if j != i:
                                a = _locate(S_in, V, R_in, kept[a0 + j], t, threads, marks_in, tag, where_i, rows_i,
                                            count_i, overlay)
                                for x in range(d):
                                    neu1[x] += S_in[a, x]
                        inv = np.float32(1.0 / (hi - lo - 1))
                        for x in range(d):
                            neu1[x] *= inv
                    else:
                        for j in range(lo, hi):
                            marks_in[t, kept[a0 + j]] = tag
                    first, last = i, i + 1  # one example per centre word
                else:
                    first, last = lo, hi  # one example per context word
                for j in range(first, last):
                    if j == i and not cbow:
                        continue
                    a = np.int64(0)
                    if not cbow:  # h is the context word's row
                        if train:
                            a = _locate(S_in, V, R_in, kept[a0 + j], t, threads, marks_in, tag, where_i, rows_i,
                                        count_i, overlay)
                            for x in range(d):
                                neu1[x] = S_in[a, x]
                        else:
                            marks_in[t, kept[a0 + j]] = tag
                    hh, acc = 0.0, 0.0
                    if train:
                        for x in range(d):
                            neu1e[x] = 0.0
                        if overlay:
                            for x in range(d):
                                hh += neu1[x] * neu1[x]
                    for k in range(negative + 1):
                        if k == 0:
                            target, label = np.int64(centre), 1.0
                        else:
                            if share or cbow:  # the centre word's k-th
                                target = np.int64(negs[nb + k - 1])
                            else:  # the next one drawn, example after example
                                target = np.int64(negs[nb])
                                nb += 1
                            label = 0.0
                            if target == centre:
                                continue
                        if not train:
                            marks_out[t, target] = tag
                            continue
                        b = _locate(S_out, V, R_out, target, t, threads, marks_out, tag, where_o, rows_o, count_o,
                                    overlay)
                        f = 0.0
                        ww = 0.0
                        if overlay and (cbow or a >= V):  # the input row's contraction: only a shared row's
                            for x in range(d):
                                f += neu1[x] * S_out[b, x]
                                ww += S_out[b, x] * S_out[b, x]
                        else:
                            for x in range(d):
                                f += neu1[x] * S_out[b, x]
                        g, term = _score(f, label, lr, sig, nls)
                        if overlay and lr > 0:
                            sg_ = label - g / lr
                            sp = sg_ * (1.0 - sg_)
                            acc += sp * ww
                            if b >= V:
                                con_o[t, b - V - t * R_out] += np.float32(lr * sp * hh)
                        loss += term
                        terms += 1
                        g = np.float32(g)
                        for x in range(d):  # word2vec.c: neu1e += g * w; w += g * h
                            neu1e[x] += g * S_out[b, x]
                            S_out[b, x] += g * neu1[x]
                    if not train:
                        continue
                    examples += 1
                    if cbow:
                        for c in range(lo, hi):
                            if c != i:
                                a = _locate(S_in, V, R_in, kept[a0 + c], t, threads, marks_in, tag, where_i, rows_i,
                                            count_i, overlay)
                                for x in range(d):
                                    S_in[a, x] += neu1e[x]
                                if overlay and a >= V:
                                    con_i[t, a - V - t * R_in] += np.float32(lr * acc / (hi - lo - 1))
                    else:
                        for x in range(d):
                            S_in[a, x] += neu1e[x]
                        if overlay and a >= V:
                            con_i[t, a - V - t * R_in] += np.float32(lr * acc)
        out[0] += loss
        out[1] += terms
        out[2] += examples

    return walk


@njit(fastmath=FASTMATH)
def _to_delta(S, V, ov, t):
    """The thread's overlay rows become its changes (no thread writes a shared row of the table)."""
    _, rows, count, R, _ = ov
    for i in range(count[t, 0]):
        S[V + t * R + i] -= S[rows[t, i]]


@njit(fastmath=FASTMATH)
def _merge(S, V, ov, threads, m):
    """Add the overlays' changes of the rows that thread ``m`` owns (row % threads) to the table,
    thread 0's first, each row's scaled by its contraction (the module's docstring: 1 for changes
    that add up, ``1/k`` for ``k`` saturated ones), and take those rows out of the overlays."""
    where, rows, count, R, con = ov
    d = S.shape[1]
    for t in range(threads):
        for i in range(count[t, 0]):
            r = rows[t, i]
            if r % threads == m:
                total, parts = 0.0, 0.0
                for u in range(threads):
                    j = where[u, r]
                    if j >= 0:
                        total += con[u, j]
                        parts += -math.expm1(-np.float64(con[u, j]))
                scale = np.float32(-math.expm1(-total) / parts) if parts > 1e-12 else np.float32(1.0)
                for x in range(d):
                    S[r, x] += scale * S[V + t * R + i, x]
    for t in range(threads):
        for i in range(count[t, 0]):
            r = rows[t, i]
            if r % threads == m:
                where[t, r] = -1
                con[t, i] = 0.0


MARK, DIRECT, SHARED = 0, 1, 2  # the walk's phases
SG, SG_SHARED, CBOW = 0, 1, 2  # the kinds of model: negatives per example or per centre word; CBOW
# (a CBOW example is a centre word: its negatives are drawn once either way)
_WALKS = tuple(_make_walk(phase != MARK, kind == CBOW, phase != DIRECT, kind == SG_SHARED)
               for kind in (SG, SG_SHARED, CBOW) for phase in (MARK, DIRECT, SHARED))
_w0, _w1, _w2, _w3, _w4, _w5, _w6, _w7, _w8 = _WALKS


@njit(cache=True)
def _walk(kind, phase, args):
    """The walk of ``kind`` and ``phase`` (one branch per slice; the walks' own branches are
    compiled out: see _make_walk)."""
    w = kind * 3 + phase
    if w == 0:
        _w0(*args)
    elif w == 1:
        _w1(*args)
    elif w == 2:
        _w2(*args)
    elif w == 3:
        _w3(*args)
    elif w == 4:
        _w4(*args)
    elif w == 5:
        _w5(*args)
    elif w == 6:
        _w6(*args)
    elif w == 7:
        _w7(*args)
    else:
        _w8(*args)


@njit(parallel=_prange_only(), fastmath=FASTMATH, cache=True, nogil=True)
def _train_chunk(kind, S_in, S_out, V, starts, slices, drawn, lr0, lr1, negative, threads, hogwild, neu1s, neu1es,
                 sig, nls, marks_in, marks_out, tag0, ov_in, ov_out, out):
    """Train a chunk, drawn (:func:`_draw`): slices one after the other (one thread), racing
    (``hogwild``), or ``threads`` at a time with marks, overlays and merges. Returns the next step
    tag."""
    kept, kstart, reach, noff, negs = drawn
    nslices = len(slices) - 1
    n = max(starts[len(starts) - 1], 1)
    if threads == 1:  # word2vec.c's order, in place
        for s in range(nslices):
            lr = np.float32(lr0 + (lr1 - lr0) * (starts[slices[s]] / n))
            _walk(kind, DIRECT, (S_in, S_out, V, kept, kstart, reach, noff, negs, slices[s], slices[s + 1], negative,
                                 lr, neu1s[0], neu1es[0], sig, nls, 0, 1, marks_in[0], marks_out[0], tag0, ov_in,
                                 ov_out, out[0]))
        return tag0
    if hogwild:  # --nondeterministic: every thread in place, racing on shared rows (gensim's way)
        for t in prange(threads):
            for s in range(t, nslices, threads):
                lr = np.float32(lr0 + (lr1 - lr0) * (starts[slices[s]] / n))
                _walk(kind, DIRECT, (S_in, S_out, V, kept, kstart, reach, noff, negs, slices[s], slices[s + 1],
                                     negative, lr, neu1s[t], neu1es[t], sig, nls, t, threads, marks_in[0],
                                     marks_out[0], tag0, ov_in, ov_out, out[t]))
        return tag0
    steps = (nslices + threads - 1) // threads
    # each step: train (then mark the next step's rows, in the other set of marks), merge;
    # two parallel regions per step, each ending in a wait for the slowest thread
    for t in prange(threads):
        if t < nslices:
            _walk(kind, MARK, (S_in, S_out, V, kept, kstart, reach, noff, negs, slices[t], slices[t + 1], negative,
                               np.float32(0.0), neu1s[t], neu1es[t], sig, nls, t, threads, marks_in[tag0 % 2],
                               marks_out[tag0 % 2], tag0, ov_in, ov_out, out[t]))
    for step in range(steps):
        tag = tag0 + step
        for t in prange(threads):
            s = step * threads + t
            if s < nslices:
                lr = np.float32(lr0 + (lr1 - lr0) * (starts[slices[s]] / n))
                _walk(kind, SHARED, (S_in, S_out, V, kept, kstart, reach, noff, negs, slices[s], slices[s + 1],
                                     negative, lr, neu1s[t], neu1es[t], sig, nls, t, threads, marks_in[tag % 2],
                                     marks_out[tag % 2], tag, ov_in, ov_out, out[t]))
                _to_delta(S_in, V, ov_in, t)
                _to_delta(S_out, V, ov_out, t)
            s += threads
            if s < nslices:
                _walk(kind, MARK, (S_in, S_out, V, kept, kstart, reach, noff, negs, slices[s], slices[s + 1],
                                   negative, np.float32(0.0), neu1s[t], neu1es[t], sig, nls, t, threads,
                                   marks_in[(tag + 1) % 2], marks_out[(tag + 1) % 2], tag + 1, ov_in, ov_out, out[t]))
        for m in prange(threads):
            _merge(S_in, V, ov_in, threads, m)
            _merge(S_out, V, ov_out, threads, m)
        for t in range(threads):
            ov_in[2][t, 0] = 0
            ov_out[2][t, 0] = 0
    return tag0 + steps


@njit(parallel=_prange_only(), fastmath=FASTMATH, cache=True, nogil=True)
def _train_replicas(kind, S_ins, S_outs, V, ids, starts, slices, key, keep, neg_prob, neg_alias, window, lr0, lr1,
                    negative, neu1s, neu1es, sig, nls, marks_in, marks_out, tag0, ov_in, ov_out, out):
    """Draw and train a chunk on ``R`` replicas of the tables at once: replica ``r`` draws the
    ``r``-th contiguous run of the chunk's slices (:func:`_draw_sentences`: the draws the whole
    chunk's would hold) and walks it on its own tables, in word2vec.c's order (the one-thread walk),
    one thread each. (The replicas draw for themselves: a reader's thread drawing for both would be
    a third busy thread on their cores, and each chunk's replicas wait for the slowest.)"""
    R = S_ins.shape[0]
    nslices = len(slices) - 1
    n = max(starts[len(starts) - 1], 1)
    for r in prange(R):
        lo, hi = r * nslices // R, (r + 1) * nslices // R
        if lo < hi:
            first = slices[lo]
            kept, kstart, reach, noff, negs = _draw_sentences(kind == CBOW, kind == SG_SHARED, ids, starts, first,
                                                              slices[hi], key, keep, neg_prob, neg_alias, window,
                                                              negative)
            for s in range(lo, hi):
                lr = np.float32(lr0 + (lr1 - lr0) * (starts[slices[s]] / n))
                _walk(kind, DIRECT, (S_ins[r], S_outs[r], V, kept, kstart, reach, noff, negs, slices[s] - first,
                                     slices[s + 1] - first, negative, lr, neu1s[r], neu1es[r], sig, nls, 0, 1,
                                     marks_in[0], marks_out[0], tag0, ov_in, ov_out, out[r]))


@njit(parallel=_prange_only(), cache=True, nogil=True)  # no fastmath: the sum in replica order
def _average(S):
    """Every replica's rows become the replicas' mean: summed in replica order, times 1/R."""
    R, V, d = S.shape
    inv = np.float32(1.0 / R)
    for v in prange(V):
        for x in range(d):
            acc = S[0, v, x]
            for r in range(1, R):
                acc += S[r, v, x]
            acc *= inv
            for r in range(R):
                S[r, v, x] = acc


def slice_bounds(ids: np.ndarray, starts: np.ndarray, keep: np.ndarray, slice_words: int, threads: int) -> np.ndarray:
    """Sentence indices where slices begin (and the end). The chunk is cut at sentence starts into
    a multiple of ``threads`` slices of about ``slice_words`` words, balanced by expected kept words
    (a step waits for its slowest slice): slice ``c`` of ``count`` begins at the first sentence
    with at least ``c / count`` of the chunk's expected kept words before it."""
    n = int(starts[-1])
    count = threads * max(1, round(n / (threads * slice_words)))
    return _slice_bounds(ids, starts, keep, count)


@njit(cache=True)  # no fastmath: the sums are numpy's cumsum, in its order
def _slice_bounds(ids, starts, keep, count):
    nsent = len(starts) - 1
    work = np.empty(nsent + 1)  # expected kept words before each sentence
    acc, p = 0.0, 0
    for s in range(nsent + 1):
        while p < starts[s]:
            acc += np.float64(keep[ids[p]])
            p += 1
        work[s] = acc
    out = np.empty(count + 1, np.int64)
    m, s = 0, 0
    for c in range(count):
        target = work[nsent] * np.float64(c) / count
        while s < nsent and work[s] < target:
            s += 1
        if m == 0 or out[m - 1] != s:
            out[m] = s
            m += 1
    if out[m - 1] != nsent:
        out[m] = nsent
        m += 1
    return out[:m]


LINE = 128  # bytes: two 64-byte cache lines (adjacent-line prefetch pairs them)

# The words all threads of one deterministic step train together: --slice-words 0 gives each of T
# threads 1,024 / T. A shared row's changes are merged once per step, so the fewer words a step
# holds the less a frequent row saturates between merges and the less the merge has to scale back
# (gcide, skip-gram, seed 1: 8 threads of 1,024 words 0.1145 / 0.4169, of 256 words 0.1241 /
# 0.4419, of 128 words 0.1296 / 0.4499; one thread 0.1257 / 0.4536: docs/training.md).
STEP_WORDS = 1024
SLICE_WORDS = 1024  # one thread's slice (no merges: only the rate's steps), and --nondeterministic's
MIN_SLICE_WORDS = 64


def auto_slice_words(threads: int, nondeterministic: bool = False) -> int:
    """``--slice-words 0``: ``1,024 / threads`` words (at least 64) for the deterministic kernel,
    so that a step covers about 1,024 words whatever the number of threads; 1,024 for one thread
    and for ``--nondeterministic``."""
    if threads <= 1 or nondeterministic:
        return SLICE_WORDS
    return max(MIN_SLICE_WORDS, STEP_WORDS // threads)



def _writable(a: np.ndarray, dtype) -> np.ndarray:
    a = np.ascontiguousarray(a, dtype=dtype)
    return a if a.flags.writeable else a.copy()


def _lines(threads: int, n: int, dtype) -> np.ndarray:
    """Zeros, ``threads`` rows of at least ``n`` items, each row padded to a multiple of LINE bytes
    and one LINE more (the padding is never touched)."""
    per = LINE // np.dtype(dtype).itemsize
    return np.zeros((threads, -(-n // per) * per + per), dtype)


class Drawn(NamedTuple):
    """A chunk's draws and slices (:meth:`Fused.draw`), to train with :meth:`Fused.train`."""

    arrays: tuple | None  # (kept, kstart, reach, noff, negs): _draw's; None where replicas draw them
    slices: np.ndarray | None  # the sentences where slices begin, then the end
    starts: np.ndarray  # the chunk's sentence starts (the learning rate moves slice by slice)
    settings: tuple  # of the kernel that drew them
    ids: np.ndarray | None = None  # the chunk's token ids as numba takes them (for the replicas' draws)


class Draws:
    """What both fused kernels (this module's and numba_cuda's) share: a chunk's draws, made on the
    CPU by :func:`_draw` (``kind``, ``window``, ``negative`` and ``max_sentence`` are the kernel's)."""

    kind: int
    window: int
    negative: int
    max_sentence: int
    _sampling_arrays: tuple = ()

    def _sampling(self, keep, neg_prob, neg_alias) -> tuple:
        """Writable copies of the vocabulary's (memory-mapped, read-only) tables, made once."""
        if not self._sampling_arrays or self._sampling_arrays[0] is not keep:
            self._sampling_arrays = (keep, _writable(keep, np.float32), _writable(neg_prob, np.float32),
                                     _writable(neg_alias, np.int32))
        return self._sampling_arrays[1:]

    def _typed(self, ids: np.ndarray, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The chunk's arrays as numba takes them, its sentences checked against ``max_sentence``."""
        # one signature for numba whatever the arrays' origin (Arrow buffers and memory maps are
        # read-only, unpickled ones writable): every variant would be compiled (a minute) apart
        ids, starts = _writable(ids, np.int32), _writable(starts, np.int64)
        if len(ids) and int(np.diff(starts).max()) > self.max_sentence:
            raise ValueError(f"a sentence is longer than max_sentence={self.max_sentence}")
        return ids, starts

    def _drawn(self, ids: np.ndarray, starts: np.ndarray, key: int, keep: np.ndarray, neg_prob: np.ndarray,
               neg_alias: np.ndarray) -> tuple:
        """``(ids, starts, keep, arrays)``: the chunk's arrays as numba takes them, the keep
        probabilities likewise, and :func:`_draw`'s arrays."""
        ids, starts = self._typed(ids, starts)
        keep, neg_prob, neg_alias = self._sampling(keep, neg_prob, neg_alias)
        arrays = _draw(self.kind == CBOW, self.kind == SG_SHARED, ids, starts, np.uint64(key), keep, neg_prob,
                       neg_alias, self.window, self.negative)
        return ids, starts, keep, arrays

    def _ready(self, drawn, ids, starts, key, keep, neg_prob, neg_alias):
        """The chunk's draws: ``drawn`` (made ahead by ``draw``, by a kernel of these settings), or
        made now."""
        if drawn is None:
            return self.draw(ids, starts, key, keep, neg_prob, neg_alias)
        if drawn.settings != self.settings:
            raise ValueError("drawn by a kernel with other settings")
        return drawn


class Fused(Draws):
    """The fused kernel of one run: the tables' stores (the V rows of each table, then each
    thread's overlay rows), per-thread buffers and marks. ``table_in`` / ``table_out`` are the
    tables themselves (views of the stores; the model wraps them as its parameters).

    A slice holds at most ``slice_words + max_sentence - 1`` words, so it touches at most that many
    input rows and ``(1 + negative) * examples per word`` times that many output rows.

    >>> k = Fused(vocab_size=1000, dim=100, threads=2, model="sg", window=5, negative=5)
    >>> k.table_in[:] = init; k.table_out[:] = 0                                # doctest: +SKIP
    >>> loss, terms, examples = k.train(ids, starts, key, 0.025, 0.0249, keep, prob, alias)  # doctest: +SKIP
    """

    def __init__(self, vocab_size: int, dim: int, threads: int, model: str, window: int, negative: int,
                 slice_words: int = 0, max_sentence: int = 1000, share_negatives: bool = True,
                 nondeterministic: bool = False, replicas: int = 1):
        if replicas > 1 and (threads != 1 or nondeterministic):
            raise ValueError("replicas train one thread each: threads=1, deterministic")
        self.V, self.d, self.threads, self.replicas = vocab_size, dim, threads, replicas
        slice_words = slice_words or auto_slice_words(threads, nondeterministic)
        self.window, self.negative, self.slice_words = window, negative, slice_words
        self.hogwild = bool(nondeterministic)
        self.kind = CBOW if model == "cbow" else SG_SHARED if share_negatives else SG
        # what a chunk's draws and slices depend on (Drawn.settings)
        self.settings = (self.kind, window, negative, slice_words, threads, self.hogwild, replicas)
        T, V = threads, vocab_size
        words = slice_words + max_sentence - 1
        per_word = (1 + negative) * (1 if model == "cbow" else 2 * window)
        overlays = T > 1 and not self.hogwild
        r_in, r_out = (min(V, words), min(V, words * per_word)) if overlays else (0, 0)
        # np.empty: overlay pages become resident only where a step writes
        if replicas > 1:  # replica 0 is the tables; the others follow it in one array (_average)
            self.replicas_in = np.empty((replicas, V, dim), np.float32)
            self.replicas_out = np.empty((replicas, V, dim), np.float32)
            self.store_in, self.store_out = self.replicas_in[0], self.replicas_out[0]
        else:
            self.store_in = np.empty((V + T * r_in, dim), np.float32)
            self.store_out = np.empty((V + T * r_out, dim), np.float32)
        self.table_in, self.table_out = self.store_in[:V], self.store_out[:V]
        cols = V if overlays else 1
        # two sets of marks: threads mark the next step's rows while others still read this step's
        self.marks_in = np.full((2, T, cols), -1, np.int32)
        self.marks_out = np.full((2, T, cols), -1, np.int32)
        # every thread's row of the small arrays on cache lines of its own: threads writing one
        # line take it from each other on every write (false sharing)
        self.ov_in = (np.full((T, cols), -1, np.int32), np.zeros((T, max(r_in, 1)), np.int32), _lines(T, 1, np.int64),
                      r_in, np.zeros((T, max(r_in, 1)), np.float32))
        self.ov_out = (np.full((T, cols), -1, np.int32), np.zeros((T, max(r_out, 1)), np.int32),
                       _lines(T, 1, np.int64), r_out, np.zeros((T, max(r_out, 1)), np.float32))
        self.max_sentence = max_sentence
        self.neu1 = _lines(max(T, replicas), dim, np.float32)
        self.neu1e = _lines(max(T, replicas), dim, np.float32)
        self.out = _lines(max(T, replicas), 3, np.float64)
        self.tag = 0

    def average(self) -> None:
        """Every replica becomes the replicas' mean (in replica order: the same bits every run)."""
        if self.replicas > 1:
            numba.set_num_threads(min(self.replicas, numba.config.NUMBA_NUM_THREADS))
            _average(self.replicas_in)
            _average(self.replicas_out)

    def broadcast(self) -> None:
        """Every replica becomes the tables (replica 0): after the tables were set from outside."""
        if self.replicas > 1:
            self.replicas_in[1:] = self.replicas_in[0]
            self.replicas_out[1:] = self.replicas_out[0]

    def draw(self, ids: np.ndarray, starts: np.ndarray, key: int, keep: np.ndarray, neg_prob: np.ndarray,
             neg_alias: np.ndarray) -> Drawn:
        """A chunk's random draws (subsampling, windows, negatives: :func:`_draw`) and its slices,
        for :meth:`train`. Touches none of the kernel's tables or buffers and releases the GIL, so
        a reader's thread can draw the next chunks while this one trains (``prefetch`` in
        training.py): the kernel's one thread then only computes. The same draws wherever they
        are made: the same bits."""
        if self.replicas > 1:  # the slices only: each replica draws its own run of them (_train_replicas)
            ids, starts = self._typed(ids, starts)
            keep = self._sampling(keep, neg_prob, neg_alias)[0]
            return Drawn(None, slice_bounds(ids, starts, keep, self.slice_words, self.replicas), starts,
                         self.settings, ids)
        ids, starts, keep, arrays = self._drawn(ids, starts, key, keep, neg_prob, neg_alias)
        slices = slice_bounds(ids, starts, keep, self.slice_words, 1 if self.hogwild else self.threads)
        return Drawn(arrays, slices, starts, self.settings)

    def train(self, ids: np.ndarray, starts: np.ndarray, key: int, lr0: float, lr1: float, keep: np.ndarray,
              neg_prob: np.ndarray, neg_alias: np.ndarray, drawn: Drawn | None = None) -> tuple[float, int, int]:
        """Train one chunk (token ids; the start of every sentence, then the end) in place; the
        learning rate goes linearly from ``lr0`` to ``lr1`` across it. Returns ``(summed loss, loss
        terms, examples)``. Releases the GIL while it runs. ``drawn``: the chunk's draws, made
        beforehand by :meth:`draw` (else drawn here)."""
        if len(ids) == 0:
            return 0.0, 0, 0
        drawn = self._ready(drawn, ids, starts, key, keep, neg_prob, neg_alias)
        if self.tag > 2**31 - 2**24:  # the marks are step tags: start again before they wrap
            self.marks_in[:] = -1
            self.marks_out[:] = -1
            self.tag = 0
        self.out[:] = 0.0
        numba.set_num_threads(min(max(self.threads, self.replicas), numba.config.NUMBA_NUM_THREADS))
        if self.replicas > 1:
            keep, neg_prob, neg_alias = self._sampling(keep, neg_prob, neg_alias)
            _train_replicas(self.kind, self.replicas_in, self.replicas_out, self.V, drawn.ids, drawn.starts,
                            drawn.slices, np.uint64(key), keep, neg_prob, neg_alias, self.window, lr0, lr1,
                            self.negative, self.neu1, self.neu1e, SIGMOID, NEG_LOG_SIGMOID, self.marks_in,
                            self.marks_out, self.tag, self.ov_in, self.ov_out, self.out)
        else:
            self.tag = _train_chunk(
                self.kind, self.store_in, self.store_out, self.V, drawn.starts, drawn.slices, drawn.arrays, lr0, lr1,
                self.negative, self.threads, self.hogwild, self.neu1, self.neu1e, SIGMOID, NEG_LOG_SIGMOID,
                self.marks_in, self.marks_out, self.tag, self.ov_in, self.ov_out, self.out)
        loss, terms, examples = self.out[:, :3].sum(axis=0)
        return float(loss), int(terms), int(examples)
