"""The fused CUDA kernel (numba-cuda, ``--kernel cuda``): word2vec.c's loop, one warp per slice.

A chunk's draws are the CPU kernel's (:func:`w2v_dist.kernels.numba_cpu._draw`: the words
subsampling keeps, each kept word's reach and negatives; made in the reader's thread, ahead), so
the examples are the CPU kernel's examples. The chunk's kept words are cut into ``warps``
contiguous ranges, one per warp. Each warp trains its range the way word2vec.c's thread trains its
part of the file: centre word after centre word, (context, target) after (context, target), every
update in place and seen by the next. The 32 lanes of a warp split a vector's dimensions (lane
``l`` holds ``l, l + 32, ...``), so a dot product is a warp reduction and a row update is one
coalesced write.

The warps race on the rows they share, as word2vec.c's threads and gensim's workers do (Hogwild):
a run is **not** repeatable, which is why ``--kernel cuda`` with more than one warp asks for
``--nondeterministic``. With one warp (``--threads 1``) there is no race: it is the CPU kernel's
one-thread order, bit for bit repeatable (and equal to the CPU kernel within float rounding:
the warp sums a dot product in another order).

How many warps: a warp does one example at a time and waits on memory, so the kernel's speed grows
with the warps, while quality falls as more warps race on the rows the text near them shares
(lost and stale updates). Measured on an H200 (gcide, skip-gram, 5 epochs, seed 1, ``--batch-words
100000``; docs/benchmarks.md, "The fused CUDA kernel"): 66 warps 3.0M words/s, 132 warps 5.2M,
264 5.8M, 528 5.2M (the whole command's training loop: flat past 132 warps, where the host's part
of each chunk, not profiled there, is the likely limit); analogies 1.9, 2.8, 3.0 and 4.4 points below the CPU kernel. ``--threads 0`` gives one warp per
multiprocessor (132 on an H100 or H200): the speed of more, the quality of fewer.

In numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``, how the tests run it without a GPU) a warp
is one thread: the simulator runs the blocks one after the other, so the warps' ranges are trained
in order, which is exactly the CPU kernel's one-thread order.
"""

from __future__ import annotations

import warnings

import numpy as np

if not hasattr(np, "row_stack"):  # numba-cuda 0.x calls it; numpy 2.5 removed it (seen on the H200's image)
    np.row_stack = np.vstack
from numba import config, cuda, float32, float64, int64  # noqa: E402

from w2v_dist.kernels.numba_cpu import (CBOW, EXP_TABLE_SIZE, MAX_EXP, NEG_LOG_SIGMOID, SG,  # noqa: E402
                                        SG_SHARED, SIGMOID, Draws, Drawn)

# numba warns at every launch of fewer blocks than the GPU has multiprocessors ("Grid size 66 will
# likely result in GPU under-utilization"): a warp a block, --threads 66 or 1 asks for exactly that
warnings.filterwarnings("ignore", message=r"Grid size \d+ will likely result in GPU under-utilization")

SIMULATED = bool(config.ENABLE_CUDASIM)
LANES = 1 if SIMULATED else 32  # the simulator has no warp shuffles: a warp is one thread there
WARPS_PER_SM = 1


@cuda.jit(device=True, inline=True)
def _score(f, label, lr, sig, nls):
    """word2vec.c's ``g`` for dot product ``f``, and the example's loss term: numba_cpu._score."""
    if f > MAX_EXP:
        return (label - 1.0) * lr, (f if label == 0.0 else 0.0)
    if f > -MAX_EXP:
        i = int((f + MAX_EXP) * (EXP_TABLE_SIZE / MAX_EXP / 2))
        if label == 0.0:
            return -sig[i] * lr, float64(nls[EXP_TABLE_SIZE - 1 - i])
        return (1.0 - sig[i]) * lr, float64(nls[i])
    return label * lr, ((-f if label == 1.0 else 0.0) if f == f else f)


if SIMULATED:
    @cuda.jit(device=True, inline=True)
    def _warp_sum(x):
        return x
else:
    @cuda.jit(device=True, inline=True)
    def _warp_sum(x):
        for off in (16, 8, 4, 2, 1):
            x += cuda.shfl_xor_sync(0xFFFFFFFF, x, off)
        return x


_KERNELS: dict = {}


def _kernel(kind: int, per_lane: int):
    """The kernel for one kind of model and ``per_lane`` = ceil(d / LANES) (the size of each
    lane's registers for a row), compiled once with both as constants."""
    key = (kind, per_lane)
    if key in _KERNELS:
        return _KERNELS[key]
    cbow, share = kind == CBOW, kind != SG

    @cuda.jit(device=True, inline=True)
    def targets(S_out, h, e, centre, nb, negs, negative, lr, sig, nls, lane, d):
        """Score the centre word and the negatives against ``h`` (this lane's part of it), update
        the output rows in place and add into ``e`` the change for the input side. Returns
        (loss, terms, next negative's index)."""
        loss, terms = float64(0.0), 0
        for k in range(per_lane):
            e[k] = float32(0.0)
        for t in range(negative + 1):
            if t == 0:
                target, label = int64(centre), float32(1.0)
            else:
                if share:  # the centre word's t-th
                    target = int64(negs[nb + t - 1])
                else:  # the next one drawn, example after example
                    target = int64(negs[nb])
                    nb += 1
                label = float32(0.0)
                if target == centre:
                    continue
            part = float32(0.0)
            for k in range(per_lane):
                c = lane + LANES * k
                if c < d:
                    part += h[k] * S_out[target, c]
            f = _warp_sum(part)
            g, term = _score(f, label, lr, sig, nls)
            g = float32(g)
            loss += term
            terms += 1
            for k in range(per_lane):
                c = lane + LANES * k
                if c < d:
                    w = S_out[target, c]
                    e[k] += g * w
                    S_out[target, c] = w + g * h[k]
        return loss, terms, nb

    @cuda.jit
    def train(S_in, S_out, kept, kstart, reach, noff, negs, lr0, lr1, negative, sig, nls, out):
        """Warp ``w`` of ``W`` trains kept words ``[m w / W, m (w + 1) / W)`` of the chunk."""
        lane = cuda.threadIdx.x % LANES
        warp = (cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x) // LANES
        warps = (cuda.gridDim.x * cuda.blockDim.x) // LANES
        d = S_in.shape[1]
        m = kept.shape[0]
        lo, hi = (m * warp) // warps, (m * (warp + 1)) // warps
        h = cuda.local.array(per_lane, float32)
        e = cuda.local.array(per_lane, float32)
        loss, terms, examples = float64(0.0), 0, 0
        # the sentence of word lo: the last s with kstart[s] <= lo
        a, b = 0, kstart.shape[0] - 1
        while b - a > 1:
            mid = (a + b) // 2
            if kstart[mid] <= lo:
                a = mid
            else:
                b = mid
        s = a
        for i in range(lo, hi):
            while kstart[s + 1] <= i:
                s += 1
            a0, a1 = kstart[s], kstart[s + 1]
            lr = float32(lr0 + (lr1 - lr0) * (float64(i) / m))
            r = reach[i]
            j0, j1 = max(a0, i - r), min(a1, i + r + 1)
            centre = kept[i]
            nb = noff[i]
            if cbow:
                if j1 - j0 < 2:
                    continue
                for k in range(per_lane):
                    h[k] = float32(0.0)
                for j in range(j0, j1):
                    if j != i:
                        row = kept[j]
                        for k in range(per_lane):
                            c = lane + LANES * k
                            if c < d:
                                h[k] += S_in[row, c]
                inv = float32(1.0 / (j1 - j0 - 1))
                for k in range(per_lane):
                    h[k] *= inv
                dl, dt, nb = targets(S_out, h, e, centre, nb, negs, negative, lr, sig, nls, lane, d)
                loss, terms, examples = loss + dl, terms + dt, examples + 1
                for j in range(j0, j1):
                    if j != i:
                        row = kept[j]
                        for k in range(per_lane):
                            c = lane + LANES * k
                            if c < d:
                                S_in[row, c] += e[k]
            else:
                for j in range(j0, j1):
                    if j == i:
                        continue
                    row = kept[j]
                    for k in range(per_lane):
                        c = lane + LANES * k
                        h[k] = S_in[row, c] if c < d else float32(0.0)
                    dl, dt, nb = targets(S_out, h, e, centre, nb, negs, negative, lr, sig, nls, lane, d)
                    loss, terms, examples = loss + dl, terms + dt, examples + 1
                    for k in range(per_lane):
                        c = lane + LANES * k
                        if c < d:
                            S_in[row, c] += e[k]
        if lane == 0:
            out[warp, 0] = loss
            out[warp, 1] = terms
            out[warp, 2] = examples

    _KERNELS[key] = train
    return train


def default_warps(device) -> int:
    """``--threads 0`` on CUDA: one warp per multiprocessor of the GPU (132 on an H100 or H200)."""
    import torch

    return WARPS_PER_SM * torch.cuda.get_device_properties(device).multi_processor_count


class CudaFused(Draws):
    """The fused CUDA kernel of one run, on tables that live on the GPU (``bind``: torch CUDA
    tensors, or anything numba takes as a CUDA array). Draws as the CPU kernel does
    (:meth:`draw`, the reader's thread), trains on the device (:meth:`train`).

    >>> k = CudaFused(vocab_size=1000, dim=100, warps=132, model="sg", window=5, negative=5)  # doctest: +SKIP
    >>> k.bind(w_in, w_out, torch_device="cuda:0")                                            # doctest: +SKIP
    >>> loss, terms, examples = k.train(ids, starts, key, 0.025, 0.0249, keep, prob, alias)  # doctest: +SKIP
    """

    slice_words = 0  # (the CPU kernel's setting; summary.json reports it)

    def __init__(self, vocab_size: int, dim: int, warps: int, model: str, window: int, negative: int,
                 max_sentence: int = 1000, share_negatives: bool = True):
        self.V, self.d, self.warps = vocab_size, dim, warps
        self.window, self.negative, self.max_sentence = window, negative, max_sentence
        self.kind = CBOW if model == "cbow" else SG_SHARED if share_negatives else SG
        self.settings = (self.kind, window, negative, "cuda")
        self.kernel = _kernel(self.kind, -(-dim // LANES))
        self._torch_device = None
        self._stream = 0
        self.table_in = self.table_out = None

    def bind(self, table_in, table_out, torch_device=None) -> None:
        """Train these tables in place. ``torch_device``: they are torch tensors there, and the
        chunk's arrays go through torch's allocator and its current stream (so the kernel is
        ordered with torch's own work on them: copies, collectives)."""
        if torch_device is not None:
            import torch

            self._torch_device = torch.device(torch_device)
            cuda.select_device(self._torch_device.index or 0)  # numba and torch share its primary context
            self._stream = cuda.external_stream(torch.cuda.current_stream(self._torch_device).cuda_stream)
            # sync=False: numba would otherwise wait for the tensor's stream at every call; the
            # kernel runs on that stream, after what torch queued there
            sig, nls = (torch.from_numpy(x).to(self._torch_device) for x in (SIGMOID, NEG_LOG_SIGMOID))
            self._held = (table_in, table_out, sig, nls)
            self.table_in, self.table_out, self._sig, self._nls = (cuda.as_cuda_array(x, sync=False)
                                                                   for x in self._held)
        else:
            self.table_in, self.table_out = table_in, table_out
            self._sig, self._nls = cuda.to_device(SIGMOID), cuda.to_device(NEG_LOG_SIGMOID)

    def _upload(self, a: np.ndarray, held: list):
        if self._torch_device is None:
            return cuda.to_device(a)
        import torch

        t = torch.from_numpy(a).to(self._torch_device)
        held.append(t)  # freed after the launch: torch's allocator reuses it only after the stream's work
        return cuda.as_cuda_array(t, sync=False)

    def draw(self, ids: np.ndarray, starts: np.ndarray, key: int, keep: np.ndarray, neg_prob: np.ndarray,
             neg_alias: np.ndarray) -> Drawn:
        """The chunk's draws: the CPU kernel's (numba_cpu.Fused.draw), made on the CPU."""
        return Drawn(self._drawn(ids, starts, key, keep, neg_prob, neg_alias)[3], None, starts, self.settings)

    def train(self, ids: np.ndarray, starts: np.ndarray, key: int, lr0: float, lr1: float, keep: np.ndarray,
              neg_prob: np.ndarray, neg_alias: np.ndarray, drawn: Drawn | None = None) -> tuple[float, int, int]:
        """Train one chunk in place on the GPU, the learning rate going linearly from ``lr0`` to
        ``lr1`` across its kept words. Returns ``(summed loss, loss terms, examples)`` (reading
        them waits for the kernel)."""
        if len(ids) == 0:
            return 0.0, 0, 0
        drawn = self._ready(drawn, ids, starts, key, keep, neg_prob, neg_alias)
        kept, kstart, reach, noff, negs = drawn.arrays
        if len(kept) == 0:
            return 0.0, 0, 0
        held: list = []
        args = [self._upload(np.ascontiguousarray(x), held) for x in (kept, kstart, reach, noff, negs)]
        if self._torch_device is None:
            out = cuda.to_device(np.zeros((self.warps, 3), np.float64))
        else:
            import torch

            out_t = torch.zeros((self.warps, 3), dtype=torch.float64, device=self._torch_device)
            out = cuda.as_cuda_array(out_t, sync=False)
        self.kernel[self.warps, LANES, self._stream](self.table_in, self.table_out, *args, float(lr0), float(lr1),
                                                     int(self.negative), self._sig, self._nls, out)
        if self._torch_device is None:
            loss, terms, examples = out.copy_to_host().sum(axis=0)
        else:
            loss, terms, examples = out_t.sum(dim=0).tolist()
        return float(loss), int(terms), int(examples)
