"""Fused CPU kernels (numba, multi-threaded): one pass computes every gradient of the step into
per-example buffers, a second applies them with each thread owning the rows ``r % threads``.
No atomics, no races, and the same result whatever the thread count.
"""

from __future__ import annotations

import math

import numba
import numpy as np
import torch
from numba import njit, prange

_buffers: dict = {}


def _buf(name: str, shape) -> np.ndarray:
    b = _buffers.get(name)
    if b is None or b.shape[0] < shape[0] or b.shape[1:] != tuple(shape[1:]):
        b = np.empty(shape, dtype=np.float32)
        _buffers[name] = b
    return b


@njit(fastmath=True, inline="always")
def _logsig(x):
    # -log(sigmoid(x)) = log1p(exp(-x)), computed stably
    if x > 0:
        return math.log1p(math.exp(-x))
    return -x + math.log1p(math.exp(x))


@njit(parallel=True, fastmath=True, cache=True)
def _grads(W_out, h_all, outputs, negatives, lr, dh, dw):
    B, d = h_all.shape
    K = negatives.shape[1]
    losses = np.zeros(B, dtype=np.float64)
    for b in prange(B):
        h = h_all[b]
        for j in range(d):
            dh[b, j] = 0.0
        loss = 0.0
        pos = outputs[b]
        for k in range(K + 1):
            t = pos if k == 0 else negatives[b, k - 1]
            if k > 0 and t == pos:
                for j in range(d):
                    dw[b, k, j] = 0.0
                continue
            w = W_out[t]
            s = 0.0
            for j in range(d):
                s += w[j] * h[j]
            if k == 0:
                g = lr * (1.0 - 1.0 / (1.0 + math.exp(-s)))
                loss += _logsig(s)
            else:
                g = -lr / (1.0 + math.exp(-s))
                loss += _logsig(-s)
            for j in range(d):
                dh[b, j] += g * w[j]
                dw[b, k, j] = g * h[j]
        losses[b] = loss
    return losses.sum()


@njit(parallel=True, fastmath=True, cache=True)
def _apply_out(W_out, outputs, negatives, dw, nthreads):
    B, K1, d = dw.shape[0], negatives.shape[1] + 1, W_out.shape[1]
    for t in prange(nthreads):
        for b in range(B):
            for k in range(K1):
                r = outputs[b] if k == 0 else negatives[b, k - 1]
                if r % nthreads == t:
                    for j in range(d):
                        W_out[r, j] += dw[b, k, j]


@njit(parallel=True, fastmath=True, cache=True)
def _gather_sg(W_in, inputs, h):
    for b in prange(inputs.shape[0]):
        h[b, :] = W_in[inputs[b]]


@njit(parallel=True, fastmath=True, cache=True)
def _apply_in_sg(W_in, inputs, dh, nthreads):
    d = W_in.shape[1]
    for t in prange(nthreads):
        for b in range(inputs.shape[0]):
            r = inputs[b]
            if r % nthreads == t:
                for j in range(d):
                    W_in[r, j] += dh[b, j]


@njit(parallel=True, fastmath=True, cache=True)
def _gather_cbow(W_in, contexts, h):
    B, C = contexts.shape
    d = W_in.shape[1]
    for b in prange(B):
        n = 0
        for j in range(d):
            h[b, j] = 0.0
        for c in range(C):
            r = contexts[b, c]
            if r >= 0:
                n += 1
                for j in range(d):
                    h[b, j] += W_in[r, j]
        if n > 0:
            inv = 1.0 / n
            for j in range(d):
                h[b, j] *= inv


@njit(parallel=True, fastmath=True, cache=True)
def _apply_in_cbow(W_in, contexts, dh, nthreads):
    B, C = contexts.shape
    d = W_in.shape[1]
    for t in prange(nthreads):
        for b in range(B):
            for c in range(C):
                r = contexts[b, c]
                if r >= 0 and r % nthreads == t:
                    for j in range(d):
                        W_in[r, j] += dh[b, j]


def _np(x):
    return x.numpy() if isinstance(x, torch.Tensor) else x


def _step(W_in, W_out, inputs, outputs, negatives, lr, gather, apply_in):
    W_in, W_out = _np(W_in), _np(W_out)
    inputs, outputs, negatives = _np(inputs), _np(outputs), _np(negatives)
    B, d = len(outputs), W_in.shape[1]
    h = _buf("h", (B, d))[:B]
    dh = _buf("dh", (B, d))[:B]
    dw = _buf("dw", (B, negatives.shape[1] + 1, d))[:B]
    gather(W_in, inputs, h)
    loss = _grads(W_out, h, outputs, negatives, np.float32(lr), dh, dw)
    nthreads = numba.get_num_threads()
    apply_in(W_in, inputs, dh, nthreads)
    _apply_out(W_out, outputs, negatives, dw, nthreads)
    return float(loss)


def sg_step(W_in, W_out, inputs, outputs, negatives, lr: float) -> float:
    return _step(W_in, W_out, inputs, outputs, negatives, lr, _gather_sg, _apply_in_sg)


def cbow_step(W_in, W_out, contexts, outputs, negatives, lr: float) -> float:
    return _step(W_in, W_out, contexts, outputs, negatives, lr, _gather_cbow, _apply_in_cbow)


def _grads_only(W_in, W_out, inputs, outputs, negatives, gather):
    W_in, W_out = _np(W_in), _np(W_out)
    inputs, outputs, negatives = _np(inputs), _np(outputs), _np(negatives)
    B, d = len(outputs), W_in.shape[1]
    h = _buf("h", (B, d))[:B]
    dh = np.empty((B, d), np.float32)
    dw = np.empty((B, negatives.shape[1] + 1, d), np.float32)
    gather(W_in, inputs, h)
    loss = _grads(W_out, h, outputs, negatives, np.float32(-1.0), dh, dw)  # an update at lr -1 is the gradient
    return float(loss), torch.from_numpy(dh), torch.from_numpy(dw)


def sg_grads(W_in, W_out, inputs, outputs, negatives):
    """``(loss, dh, dw)``: the gradient of the summed loss, not applied. ``dh`` (B, d) belongs to
    each example's input row(s) (every CBOW context row gets the whole ``dh``), ``dw`` (B, K+1, d)
    to its target rows."""
    return _grads_only(W_in, W_out, inputs, outputs, negatives, _gather_sg)


def cbow_grads(W_in, W_out, contexts, outputs, negatives):
    return _grads_only(W_in, W_out, contexts, outputs, negatives, _gather_cbow)
