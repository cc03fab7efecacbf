"""Reference kernels in plain torch ops, on mini-batches of examples; any device.

A mini-batch's updates are all computed from the weights as they were before it and then added
(``W += lr * sum of the examples' gradients``), with word2vec.c's gradient: for each example, ``h``
is the input vector (SG: the context word's row; CBOW: the mean of the context rows); for the
positive target (label 1) and each negative (label 0; skipped when it equals the target) with
output row ``w``: ``g = lr * (label - sigmoid(w.h))``, ``dW_out[w] += g * h``, ``dh += g * w``;
then the input row(s) += dh (each CBOW context row gets the whole dh, as in word2vec.c).
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
    return rows.sum(1) / present.sum(1, keepdim=True).clamp(min=1), present, rows


@torch.no_grad()
def sg_step(W_in: torch.Tensor, W_out: torch.Tensor, inputs, outputs, negatives, lr: float) -> float:
    targets, labels, valid = _targets(outputs, negatives)
    h = W_in[inputs]
    loss, dh, dw = _score(W_out, h, targets, labels, valid, lr)
    W_in.index_add_(0, inputs, dh)
    W_out.index_add_(0, targets.reshape(-1), dw.reshape(-1, dw.shape[-1]))
    return float(loss)


@torch.no_grad()
def cbow_step(W_in: torch.Tensor, W_out: torch.Tensor, contexts, outputs, negatives, lr: float) -> float:
    targets, labels, valid = _targets(outputs, negatives)
    h, present, rows = _cbow_h(W_in, contexts)
    loss, dh, dw = _score(W_out, h, targets, labels, valid, lr)
    W_in.index_add_(0, contexts[present], dh[:, None, :].expand_as(rows)[present])
    W_out.index_add_(0, targets.reshape(-1), dw.reshape(-1, dw.shape[-1]))
    return float(loss)
