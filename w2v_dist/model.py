"""The two embedding tables of word2vec and the negative-sampling step on them.

``in_embed`` (word2vec.c's syn0) starts at U(-0.5/d, 0.5/d) and is what gets exported;
``out_embed`` (syn1neg) starts at zero. The loss minimised per example is
``-log sigmoid(w_o . h) - sum_n log sigmoid(-w_n . h)``.

Two ways to take a step, with the same result:

- :meth:`Word2Vec.step` (one process): a fused kernel computes and applies the summed
  mini-batch update in place;
- ``loss = model(inputs, outputs, negatives); loss.backward(); optimizer.step()`` (under
  DistributedDataParallel): the same kernel computes the gradient, which autograd hands to DDP as
  row-sparse tensors (``nn.Embedding(sparse=True)``: gloo all-reduces only the touched rows)
  or dense ones (NCCL, which has no sparse all-reduce), and ``torch.optim.SGD`` applies it.
"""

from __future__ import annotations

import torch
from torch import nn

from w2v_dist.kernels import get_kernel
from w2v_dist.pairs import Examples


class _NegativeSampling(torch.autograd.Function):
    """Loss of a mini-batch; backward returns the kernel's gradient (sparse or dense)."""

    @staticmethod
    def forward(ctx, w_in, w_out, inputs, outputs, negatives, grads_fn, sparse, stats):
        loss, dh, dw = grads_fn(w_in.detach(), w_out.detach(), inputs, outputs, negatives)
        ctx.save_for_backward(inputs, outputs, negatives, dh.to(w_in.device), dw.to(w_in.device))
        ctx.shape, ctx.sparse, ctx.stats = w_in.shape, sparse, stats
        return torch.tensor(loss, dtype=torch.float64)

    @staticmethod
    def backward(ctx, grad_loss):
        inputs, outputs, negatives, dh, dw = ctx.saved_tensors
        if grad_loss.item() != 1.0:  # loss.backward() passes 1: no copy of the gradient then
            dh, dw = dh * grad_loss.to(dh.dtype), dw * grad_loss.to(dw.dtype)
        if inputs.dim() == 2:  # CBOW: every present context word gets the whole dh
            present = inputs >= 0
            rows_in = inputs[present]
            vals_in = dh[:, None, :].expand(*inputs.shape, dh.shape[1])[present]
        else:
            rows_in, vals_in = inputs, dh
        rows_out = torch.cat([outputs[:, None], negatives], dim=1).reshape(-1)
        vals_out = dw.reshape(-1, dw.shape[-1])
        grads = (_grad(rows_in, vals_in, ctx.shape, ctx.sparse), _grad(rows_out, vals_out, ctx.shape, ctx.sparse))
        # what this rank hands to the all-reduce: touched rows (index + row) when sparse, else all
        ctx.stats["sync_bytes"] += sum(g._nnz() * (8 + 4 * g.shape[1]) if g.is_sparse else g.numel() * 4
                                       for g in grads)
        return (*grads, None, None, None, None, None, None)


def _grad(rows, values, shape, sparse):
    rows = rows.long()
    if sparse:
        # coalesced here (gloo would coalesce anyway): duplicate rows are summed once, not sent twice
        return torch.sparse_coo_tensor(rows[None], values, shape, check_invariants=False).coalesce()
    return torch.zeros(shape, dtype=values.dtype, device=values.device).index_add_(0, rows, values)


class Word2Vec(nn.Module):
    def __init__(self, vocab_size: int, dim: int, model: str = "sg", seed: int = 1,
                 device: str = "cpu", kernel: str = "auto", sparse: bool = True):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        init = (torch.rand(vocab_size, dim, generator=g) - 0.5) / dim
        self.in_embed = nn.Embedding(vocab_size, dim, sparse=sparse, _weight=init.to(device))
        self.out_embed = nn.Embedding(vocab_size, dim, sparse=sparse,
                                      _weight=torch.zeros(vocab_size, dim, device=device))
        self.model = model
        self.sparse = sparse
        self.device = torch.device(device)
        k = get_kernel(kernel, self.device.type)
        self._step = k.sg_step if model == "sg" else k.cbow_step
        self._grads = k.sg_grads if model == "sg" else k.cbow_grads
        self._numpy = k.__name__.endswith("numba_cpu")
        self.stats = {"sync_bytes": 0}

    def _args(self, ex: Examples):
        if self._numpy:
            return ex.inputs, ex.outputs, ex.negatives
        return tuple(torch.as_tensor(a, device=self.device).long() for a in (ex.inputs, ex.outputs, ex.negatives))

    def batch(self, ex: Examples) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The tensors :meth:`forward` takes (zero-copy views of the numpy arrays on CPU)."""
        return tuple(torch.as_tensor(a) for a in self._args(ex))

    def forward(self, inputs: torch.Tensor, outputs: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
        """The summed loss of a mini-batch, differentiable w.r.t. both tables."""
        return _NegativeSampling.apply(self.in_embed.weight, self.out_embed.weight, inputs, outputs,
                                       negatives, self._grads_fn, self.sparse, self.stats)

    def _grads_fn(self, w_in, w_out, inputs, outputs, negatives):
        if self._numpy:
            inputs, outputs, negatives = inputs.numpy(), outputs.numpy(), negatives.numpy()
        return self._grads(w_in, w_out, inputs, outputs, negatives)

    @torch.no_grad()
    def step(self, ex: Examples, lr: float) -> float:
        """One fused SGD step on a mini-batch, in place; returns the summed loss."""
        return self._step(self.in_embed.weight.data, self.out_embed.weight.data, *self._args(ex), lr)

    def tables(self) -> dict[str, torch.Tensor]:
        return {"in_embed": self.in_embed.weight, "out_embed": self.out_embed.weight}

    def vectors(self):
        """The word vectors (input embeddings) as a CPU float32 numpy array."""
        return self.in_embed.weight.detach().to("cpu", torch.float32).numpy()
