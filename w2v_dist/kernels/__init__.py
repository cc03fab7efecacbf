"""The hot step: training the two embedding tables on a chunk of token ids.

- ``numba_cpu`` (``--kernel numba``, the default on CPU): the fused kernel. Examples are drawn
  by it in a pass of their own (word2vec.c's subsampling, windows and unigram^0.75 negatives; in
  the reader's thread, ahead of training), updates are
  word2vec.c's sequential SGD inside a slice of the chunk, ``--threads`` slices at a time with
  private overlays for rows several threads touch, merged in thread order: repeatable bit for
  bit for a given thread count (see the module's docstring).
- ``numba_cuda`` (``--kernel cuda``, ``auto`` on a GPU with ``--nondeterministic``): the same
  draws, trained on the GPU by warps that each run word2vec.c's loop over their range of the chunk,
  racing on the rows they share (not repeatable, but for one warp).
- ``reference`` (``--kernel torch``): plain torch ops on mini-batches of examples (summed updates
  from the weights as they were before the mini-batch); any device, the ground truth for the
  gradient (checked against autograd).
"""

from __future__ import annotations

import importlib
import logging
import threading

log = logging.getLogger("w2v_dist.train")


def resolve_kernel(name: str, device: str, nondeterministic: bool = False) -> str:
    """``--kernel`` on ``device`` -> ``"numba"``, ``"cuda"`` or ``"torch"``. ``auto`` on a GPU is
    the fused CUDA kernel where a run may race (``--nondeterministic``), else the repeatable
    reference kernel."""
    if name == "auto":
        if device == "cpu":
            return "numba" if _numba_available() else "torch"
        return "cuda" if nondeterministic and _numba_cuda_available() else "torch"
    if name == "numba" and device != "cpu":
        raise ValueError(f"--kernel numba runs on CPU only; use --kernel cuda or torch on {device}")
    if name == "cuda" and device == "cpu":
        raise ValueError("--kernel cuda runs on a GPU: use --device cuda")
    return name


def _numba_available() -> bool:
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


def _numba_cuda_available() -> bool:
    try:
        from numba import cuda
    except ImportError:
        return False
    return bool(cuda.is_available())


_warming: threading.Thread | None = None


def still_warming() -> bool:
    """The kernel's warm-up thread is still loading or compiling it (numba, in native code)."""
    return _warming is not None and _warming.is_alive()


def warm_up_in_background(name: str, device: str, replicas: bool = False) -> threading.Thread:
    """Load the fused kernel (numba: importing it, then its machine code from the on-disk cache, or
    compiling it on a first run: 0.5-0.8 s on one core) in a thread of its own, so that it overlaps
    the vocabulary pass instead of following it. The first step finds it loaded, or waits for it
    (numba compiles a function once, under its lock). ``replicas``: ``--replicas``' kernel and
    average too. A failure here is left to the real call to raise. Once a process: later calls
    return the first one's thread; join it before the first step (:func:`wait_warm_up`), so that no
    two threads run a parallel region at once."""
    global _warming
    if _warming is not None:
        return _warming
    # numba's import pulls in numpy.random, which numpy imports lazily on first use: when this
    # thread and the caller's (the data plan draws with it) import it at the same moment, Python can
    # raise _DeadlockError on its module lock (a rank died so with TensorBoard's import in a thread,
    # docs/benchmarks.md). Imported here first, it is loaded before the thread starts.
    importlib.import_module("numpy.random")

    def run() -> None:
        try:
            if resolve_kernel(name, device) == "numba":
                _load_fused(replicas)
        except Exception as e:  # noqa: BLE001 - the training's own call raises it where it matters
            log.debug("warming the kernel up failed: %s", e)

    _warming = threading.Thread(target=run, name="w2v_dist-kernel-warm-up", daemon=True)
    _warming.start()
    return _warming


def wait_warm_up() -> None:
    """Wait for the warm-up thread, if any (before the first step: the replicas' kernel runs a
    parallel region, and numba's workqueue threading layer must not run two at once)."""
    if _warming is not None:
        _warming.join()


def _load_fused(replicas: bool = False) -> None:
    """The fused kernel called once with the argument types of every run (a tiny chunk on tiny
    tables): numba loads or compiles it for those types (and ``--replicas``' kernel and average)."""
    import numpy as np

    from w2v_dist.kernels.numba_cpu import Fused

    ones = np.ones(8, np.float32)
    for k in [Fused(vocab_size=8, dim=4, threads=1, model="sg", window=2, negative=1)] + (
            [Fused(vocab_size=8, dim=4, threads=1, model="sg", window=2, negative=1, replicas=2)] if replicas else []):
        k.table_in[:] = 0.0
        k.table_out[:] = 0.0
        k.broadcast()
        k.train(np.zeros(4, np.int32), np.array([0, 4], np.int64), 0, 0.0, 0.0, ones, ones, np.zeros(8, np.int32))
        k.average()
