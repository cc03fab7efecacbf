"""Reference kernels in plain torch ops, on mini-batches of examples; any device.

A mini-batch's updates are all computed from the weights as they were before it and then added
(``W += lr * sum of the examples' gradients``), with word2vec.c's gradient: for each example, ``h``
is the input vector (SG: the context word's row; CBOW: the mean of the context rows); for the
positive target (label 1) and each negative (label 0; skipped when it equals the target) with
output row ``w``: ``g = lr * (label - sigmoid(w.h))``, ``dW_out[w] += g * h``, ``dh += g * w``;
then the input row(s) += dh (each CBOW context row gets the whole dh, as in word2vec.c).
A step returns its summed loss as a 0-d tensor on the tables' device (reading it is the caller's
choice: on CUDA each read waits for the device).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _targets(outputs: torch.Tensor, negatives: torch.Tensor):
    targets = torch.cat([outputs[:, None], negatives], dim=1)  # (B, K+1)
    labels = torch.zeros(targets.shape, dtype=torch.float32, device=targets.device)
    labels[:, 0] = 1.0
    # a negative equal to the positive is skipped (word2vec.c: `if (target == word) continue`)
    valid = torch.ones_like(labels)
    valid[:, 1:] = (negatives != outputs[:, None]).float()
    return targets, labels, valid


def _score(W_out, h, targets, labels, valid, lr):
    w = W_out[targets]  # (B, K+1, d)
    s = torch.bmm(w, h[:, :, None]).squeeze(2)
    g = (labels - torch.sigmoid(s)) * lr * valid
    loss = -(F.logsigmoid(torch.where(labels > 0, s, -s)) * valid).sum()
    dh = torch.bmm(g[:, None, :], w).squeeze(1)  # (B, d)
    dw = g[:, :, None] * h[:, None, :]  # (B, K+1, d)
    return loss, dh, dw


def _cbow_h(W_in, contexts):
    present = contexts >= 0
    rows = W_in[contexts.clamp(min=0)] * present[:, :, None]  # (B, C, d)
    return rows.sum(1) / present.sum(1, keepdim=True).clamp(min=1), present


def _add_rows(W: torch.Tensor, index: torch.Tensor, values: torch.Tensor, deterministic: bool) -> None:
    """``W[index[i]] += values[i]`` for every i. On CUDA ``index_add_`` adds with atomics, so a row
    that recurs in a mini-batch sums its updates in a different order each run (two runs of one
    command ended 1.4e-5 apart on an H200); ``index_put_(accumulate=True)`` sorts the indices first
    and sums each row's updates in a fixed order (what torch's deterministic mode does for
    ``index_add_``). On the CPU ``index_add_`` is sequential, already repeatable."""
    if deterministic and W.is_cuda:
        W.index_put_((index,), values, accumulate=True)
    else:
        W.index_add_(0, index, values)


@torch.no_grad()
def sg_step(W_in: torch.Tensor, W_out: torch.Tensor, inputs, outputs, negatives, lr: float,
            deterministic: bool = True) -> torch.Tensor:
    targets, labels, valid = _targets(outputs, negatives)
    h = W_in[inputs]
    loss, dh, dw = _score(W_out, h, targets, labels, valid, lr)
    _add_rows(W_in, inputs, dh, deterministic)
    _add_rows(W_out, targets.reshape(-1), dw.reshape(-1, dw.shape[-1]), deterministic)
    return loss


@torch.no_grad()
def cbow_step(W_in: torch.Tensor, W_out: torch.Tensor, contexts, outputs, negatives, lr: float,
              deterministic: bool = True) -> torch.Tensor:
    targets, labels, valid = _targets(outputs, negatives)
    h, present = _cbow_h(W_in, contexts)
    loss, dh, dw = _score(W_out, h, targets, labels, valid, lr)
    # absent context slots (-1) add zeros to row 0: a boolean mask here would make the host wait
    # for the device to count the rows on every mini-batch
    _add_rows(W_in, contexts.clamp(min=0).reshape(-1), (dh[:, None, :] * present[:, :, None]).reshape(-1, dh.shape[-1]),
              deterministic)
    _add_rows(W_out, targets.reshape(-1), dw.reshape(-1, dw.shape[-1]), deterministic)
    return loss
