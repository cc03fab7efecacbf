"""Compile the fused CUDA kernel (w2v_dist/kernels/numba_cuda.py) to PTX, without a GPU.

CI has no GPU and numba's CUDA simulator runs the kernel as Python, so neither sees what only
numba-cuda's compiler sees (typing, unsupported calls, local memory). This does, on any machine,
in an environment of its own (numba-cuda brings NVVM, about 0.5 GB, which the project's
environment does not need):

    python3 -m venv /tmp/cv && /tmp/cv/bin/pip install "numba-cuda[cu13]"
    PYTHONPATH=. /tmp/cv/bin/python bench/cuda_compile_check.py

It prints, for each kind of model and two widths of vector, the PTX's size and whether any of it
spills to local memory (a lane's row registers that did not fit).
"""

from __future__ import annotations

import time

from numba import cuda
from numba import types as T

from w2v_dist.kernels import numba_cuda as C


def main() -> None:
    def arr(t, nd=1):
        return T.Array(t, nd, "C")

    sig = (arr(T.float32, 2), arr(T.float32, 2), arr(T.int32), arr(T.int64), arr(T.int32), arr(T.int64),
           arr(T.int32), T.float64, T.float64, T.int64, arr(T.float32), arr(T.float32), arr(T.float64, 2))
    for kind, name in ((C.SG, "sg"), (C.SG_SHARED, "sg, shared negatives"), (C.CBOW, "cbow")):
        for dim in (100, 300):
            t = time.perf_counter()
            ptx, _ = cuda.compile_ptx(C._kernel(kind, -(-dim // C.LANES)).py_func, sig, cc=(9, 0))
            print(f"{name}, d={dim}: {ptx.count(chr(10)):,} lines of PTX, local memory: "
                  f"{'yes' if '.local' in ptx else 'none'} ({time.perf_counter() - t:.1f} s)")


if __name__ == "__main__":
    main()
