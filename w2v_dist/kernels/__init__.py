"""The hot step: one mini-batch of negative-sampling SGD on the two embedding tables.

Every kernel has the same semantics (summed mini-batch SGD, word2vec.c's gradient):

    for each example: h = input vector (SG: the context word's row; CBOW: the mean of the
    context rows); for the positive target (label 1) and each negative (label 0, skipped when it
    equals the positive) with output row w:  g = lr * (label - sigmoid(w.h));
    dW_out[w] += g * h;  dh += g * w.   Then W_in rows += dh (each CBOW context row gets the
    whole dh, as in word2vec.c), W_out rows += dW_out.

All gradients of a step are computed from the weights as they were before the step, then
applied, so the result does not depend on thread scheduling and a run is repeatable.
Returns the summed loss  -log sigmoid(w.h) - sum log sigmoid(-w_n.h)  of the batch.

- ``reference``: torch ops (gather, bmm, index_add_); runs on any device, the ground truth.
- ``numba_cpu``: one fused, multi-threaded pass per step on CPU.
"""

from __future__ import annotations


def get_kernel(name: str, device: str):
    """The kernel module for ``--kernel`` on ``device``: ``sg_step``/``cbow_step`` apply a step
    in place (one process); ``sg_grads``/``cbow_grads`` return the gradient unapplied (for
    DistributedDataParallel to sum across ranks first)."""
    if name == "auto":
        name = "numba" if device == "cpu" and _numba_available() else "torch"
    if name == "numba":
        if device != "cpu":
            raise ValueError(f"--kernel numba runs on CPU only; use --kernel torch on {device}")
        from w2v_dist.kernels import numba_cpu as k
    else:
        from w2v_dist.kernels import reference as k
    return k


def _numba_available() -> bool:
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True
