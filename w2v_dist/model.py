"""The two embedding tables of word2vec and the negative-sampling step on them.

``in_embed`` (word2vec.c's syn0) starts at U(-0.5/d, 0.5/d) and is what gets exported;
``out_embed`` (syn1neg) starts at zero. The loss minimised per example is
``-log sigmoid(w_o . h) - sum_n log sigmoid(-w_n . h)``; its gradient is applied by a kernel from
:mod:`w2v_dist.kernels` (summed mini-batch SGD, see docs/training.md).
"""

from __future__ import annotations

import torch
from torch import nn

from w2v_dist.kernels import get_kernel
from w2v_dist.pairs import Examples


class Word2Vec(nn.Module):
    def __init__(self, vocab_size: int, dim: int, model: str = "sg", seed: int = 1,
                 device: str = "cpu", kernel: str = "auto"):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        init = (torch.rand(vocab_size, dim, generator=g) - 0.5) / dim
        self.in_embed = nn.Parameter(init.to(device), requires_grad=False)
        self.out_embed = nn.Parameter(torch.zeros(vocab_size, dim, device=device), requires_grad=False)
        self.model = model
        self.device = torch.device(device)
        sg_step, cbow_step = get_kernel(kernel, self.device.type)
        self._step = sg_step if model == "sg" else cbow_step
        self._numpy_kernel = kernel != "torch" and self.device.type == "cpu" and sg_step.__module__.endswith("numba_cpu")

    @torch.no_grad()
    def step(self, ex: Examples, lr: float) -> float:
        """One SGD step on a mini-batch; returns the summed loss."""
        if self._numpy_kernel:
            args = (ex.inputs, ex.outputs, ex.negatives)
        else:
            args = tuple(torch.as_tensor(a, device=self.device).long() for a in (ex.inputs, ex.outputs, ex.negatives))
        return self._step(self.in_embed.data, self.out_embed.data, *args, lr)

    def vectors(self):
        """The word vectors (input embeddings) as a CPU float32 numpy array."""
        return self.in_embed.detach().to("cpu", torch.float32).numpy()
