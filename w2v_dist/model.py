"""The two embedding tables of word2vec and the negative-sampling training step on them.

``in_embed`` (word2vec.c's syn0) starts at U(-1/d, 1/d) (gensim's; word2vec.c's is half as wide:
docs/training.md) and is what gets exported;
``out_embed`` (syn1neg) starts at zero. The loss minimised per example is
``-log sigmoid(w_o . h) - sum_n log sigmoid(-w_n . h)``.

:meth:`Word2Vec.train_chunk` trains on a chunk of token ids, in place:

- ``--kernel numba`` (CPU, the default there): the fused kernel draws the examples (subsampling,
  windows, negatives: :meth:`Word2Vec.draw`, which the reader's thread calls ahead) and applies
  word2vec.c's sequential updates, ``--threads`` slices at a time
  (:mod:`w2v_dist.kernels.numba_cpu`); the tables are views of the kernel's stores;
- ``--kernel cuda`` (GPU): the same draws, trained by warps racing on the GPU, word2vec.c's
  sequential updates inside each warp's range of the chunk (:mod:`w2v_dist.kernels.numba_cuda`);
  the tables are torch CUDA tensors the kernel writes in place;
- ``--kernel torch`` (any device; CUDA): examples drawn with numpy (:mod:`w2v_dist.pairs`) and
  summed mini-batch updates of ``--batch-pairs`` examples (:mod:`w2v_dist.kernels.reference`),
  added in a fixed order (on CUDA too) unless ``--nondeterministic``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from w2v_dist.kernels import resolve_kernel
from w2v_dist.pairs import make_examples


class Word2Vec(nn.Module):
    """>>> m = Word2Vec(vocab, dim=100, model="sg", threads=2)      # doctest: +SKIP
    >>> loss, examples = m.train_chunk(tokens, lr0=0.025, lr1=0.0249)  # doctest: +SKIP
    """

    def __init__(self, vocab, dim: int, model: str = "sg", seed: int = 1, device: str = "cpu",
                 kernel: str = "auto", *, window: int = 5, negative: int = 5, threads: int = 1,
                 slice_words: int = 0, max_sentence: int = 1000, share_negatives: bool = True,
                 nondeterministic: bool = False, batch_pairs: int = 256, replicas: int = 1, average_every: int = 64):
        super().__init__()
        V = len(vocab)
        g = torch.Generator().manual_seed(seed)
        init = (torch.rand(V, dim, generator=g) * 2 - 1) / dim
        self.model, self.window, self.negative, self.batch_pairs = model, window, negative, batch_pairs
        self.average_every = average_every  # --replicas: steps between averages
        self.keep_prob, self.neg_prob, self.neg_alias = vocab.keep_prob, vocab.neg_prob, vocab.neg_alias
        self.sampler = vocab.sampler
        self.device = torch.device(device)
        self.kernel = resolve_kernel(kernel, self.device.type, nondeterministic)
        if self.kernel == "cuda":
            from w2v_dist.kernels.numba_cuda import CudaFused, default_warps

            w_in, w_out = init.to(self.device), torch.zeros(V, dim, device=self.device)
            self.fused = CudaFused(V, dim, threads or default_warps(self.device), model, window, negative,
                                   max_sentence, share_negatives)
            self.fused.bind(w_in, w_out, torch_device=self.device)
        elif self.kernel == "numba":
            from w2v_dist.kernels.numba_cpu import Fused

            self.fused = Fused(V, dim, 1 if replicas > 1 else threads, model, window, negative, slice_words,
                               max_sentence, share_negatives, nondeterministic, replicas)
            w_in, w_out = torch.from_numpy(self.fused.table_in), torch.from_numpy(self.fused.table_out)
            w_in.copy_(init)
            w_out.zero_()
            self.fused.broadcast()
        else:
            self.fused = None
            self.deterministic = not nondeterministic
            w_in, w_out = init.to(self.device), torch.zeros(V, dim, device=self.device)
        self.in_embed = nn.Embedding(V, dim, _weight=w_in).requires_grad_(False)
        self.out_embed = nn.Embedding(V, dim, _weight=w_out).requires_grad_(False)

    @torch.no_grad()
    def train_chunk(self, tokens, lr0: float, lr1: float) -> tuple[float, int]:
        """Train on a chunk (:class:`~w2v_dist.corpus.dataset.Tokens`), the learning rate going
        linearly from ``lr0`` to ``lr1`` across it. Returns ``(summed loss, examples)``."""
        if self.fused is not None:
            loss, _, examples = self.fused.train(tokens.ids, tokens.starts, tokens.key, lr0, lr1, self.keep_prob,
                                                 self.neg_prob, self.neg_alias, tokens.drawn)
            return loss, examples
        from w2v_dist.kernels import reference

        ex = make_examples(tokens.tokenized(), self.model, self.window, self.keep_prob, self.sampler, self.negative,
                           np.random.default_rng(tokens.key))
        step = reference.sg_step if self.model == "sg" else reference.cbow_step
        W_in, W_out = self.in_embed.weight.data, self.out_embed.weight.data
        n = len(ex)
        if n == 0:
            return 0.0, 0
        # the chunk's examples cross to the device once, and its loss comes back once: on CUDA a
        # copy or a read of the loss per mini-batch would make the host wait for the device each time
        inputs, outputs, negatives = (torch.from_numpy(x).to(self.device).long()
                                      for x in (ex.inputs, ex.outputs, ex.negatives))
        loss = torch.zeros((), dtype=torch.float64, device=self.device)
        for a in range(0, n, self.batch_pairs):
            b = min(a + self.batch_pairs, n)
            loss += step(W_in, W_out, inputs[a:b], outputs[a:b], negatives[a:b], lr0 + (lr1 - lr0) * a / n,
                         self.deterministic)
        return float(loss), n

    def draw(self, tokens) -> None:
        """The fused kernel's random draws for a chunk (subsampling, windows, negatives), made
        ahead, in the reader's thread, so that the training thread only computes
        (:meth:`~w2v_dist.kernels.numba_cpu.Fused.draw`): the same draws, the same bits. A no-op for
        ``--kernel torch``."""
        if self.fused is not None and len(tokens.ids):
            tokens.drawn = self.fused.draw(tokens.ids, tokens.starts, tokens.key, self.keep_prob, self.neg_prob,
                                           self.neg_alias)

    @property
    def replicas(self) -> int:
        return getattr(self.fused, "replicas", 1)

    def average(self) -> None:
        """``--replicas``: every replica becomes the replicas' mean (the tables are replica 0)."""
        if self.replicas > 1:
            self.fused.average()

    def after_step(self, step: int, full: bool = False) -> bool:
        """``--replicas``: average them if this step is due (every ``average_every`` steps, or
        ``full``: an epoch began). True where the replicas agree: a checkpoint can be taken."""
        if self.replicas <= 1:
            return True
        if step % self.average_every == 0 or full:
            self.average()
            return True
        return False

    def tables_set(self) -> None:
        """The tables were set from outside (a checkpoint): every replica takes them."""
        if self.replicas > 1:
            self.fused.broadcast()

    def tables(self) -> dict[str, torch.Tensor]:
        return {"in_embed": self.in_embed.weight, "out_embed": self.out_embed.weight}

    def vectors(self):
        """The word vectors (input embeddings) as a CPU float32 numpy array."""
        return self.in_embed.weight.detach().to("cpu", torch.float32).numpy()
