"""The hot step: training the two embedding tables on a chunk of token ids.

- ``numba_cpu`` (``--kernel numba``, the default on CPU): the fused kernel. Examples are drawn
  inside it (word2vec.c's subsampling, windows and unigram^0.75 negatives), updates are
  word2vec.c's sequential SGD inside a slice of the chunk, ``--threads`` slices at a time with
  private overlays for rows several threads touch, merged in thread order: repeatable bit for
  bit for a given thread count (see the module's docstring).
- ``reference`` (``--kernel torch``): plain torch ops on mini-batches of examples (summed updates
  from the weights as they were before the mini-batch); any device, the ground truth for the
  gradient (checked against autograd).
"""

from __future__ import annotations


def resolve_kernel(name: str, device: str) -> str:
    """``--kernel`` on ``device`` -> ``"numba"`` or ``"torch"``."""
    if name == "auto":
        return "numba" if device == "cpu" and _numba_available() else "torch"
    if name == "numba" and device != "cpu":
        raise ValueError(f"--kernel numba runs on CPU only; use --kernel torch on {device}")
    return name


def _numba_available() -> bool:
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True
