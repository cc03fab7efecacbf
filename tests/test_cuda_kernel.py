"""The fused CUDA kernel (``--kernel cuda``) against the CPU kernel's one-thread order.

CI has no GPU: the checks run in numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``, in a
subprocess, since numba reads it at import), where a warp is one thread and the warps run one after
the other, so any number of warps must give the CPU kernel's one-thread result. On a GPU
(``W2V_CUDA_TEST=gpu``, as bench/cuda_check.sh runs it) the same checks run on the device with 32
lanes a warp: one warp must give the CPU kernel's result, and many racing warps the same examples.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
ON_GPU = os.environ.get("W2V_CUDA_TEST") == "gpu"


def check(model: str, share: bool, warps: int, dim: int) -> dict:
    """Two chunks trained by the CPU kernel (one thread) and by the CUDA kernel (``warps`` warps),
    from the same tables and the same draws, at a constant rate (the CPU kernel moves the rate slice
    by slice, the CUDA kernel word by word). Returns what the test compares."""
    from numba import cuda

    from tests.test_kernels import _chunk, _fused, _sampling
    from w2v_dist.kernels.numba_cuda import SIMULATED, CudaFused

    V, lr = 40, 0.05
    keep, prob, alias = _sampling(V)
    cpu = _fused(V, dim, 1, model, share=share)
    gpu = CudaFused(V, dim, warps, model, 3, 4, max_sentence=64, share_negatives=share)
    t_in, t_out = cuda.to_device(cpu.table_in.copy()), cuda.to_device(cpu.table_out.copy())
    gpu.bind(t_in, t_out)
    counts = []
    for key, seed in ((7, 0), (8, 1)):
        ids, starts = _chunk(V, n=300, seed=seed)
        drawn = cpu.draw(ids, starts, key, keep, prob, alias)
        a = cpu.train(ids, starts, key, lr, lr, keep, prob, alias, drawn)
        b = gpu.train(ids, starts, key, lr, lr, keep, prob, alias, gpu.draw(ids, starts, key, keep, prob, alias))
        counts.append((a, b))
    return {"simulated": SIMULATED, "counts": counts,
            "in": float(np.abs(t_in.copy_to_host() - cpu.table_in).max()),
            "out": float(np.abs(t_out.copy_to_host() - cpu.table_out).max()),
            "moved": float(np.abs(cpu.table_out).max())}


def _run(model: str, share: bool, warps: int, dim: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    if not ON_GPU:
        env["NUMBA_ENABLE_CUDASIM"] = "1"
    code = (f"import json; from tests.test_cuda_kernel import check; "
            f"print(json.dumps(check({model!r}, {share!r}, {warps}, {dim})))")
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("model,share,warps,dim", [
    ("sg", True, 1, 7), ("sg", True, 5, 40), ("sg", False, 3, 7), ("cbow", True, 4, 7),
])
def test_cuda_kernel_trains_the_cpu_kernel_s_examples_in_its_order(model, share, warps, dim):
    r = _run(model, share, warps, dim)
    assert r["simulated"] != ON_GPU
    for (loss_cpu, terms_cpu, ex_cpu), (loss_gpu, terms_gpu, ex_gpu) in r["counts"]:
        # the same draws cut into the warps' ranges: every example trained once, every target scored
        assert ex_gpu == ex_cpu > 100 and terms_gpu == terms_cpu
        if warps == 1 or not ON_GPU:  # no race: the same sequence of updates
            assert loss_gpu == pytest.approx(loss_cpu, rel=1e-4)
    assert r["moved"] > 0.1  # the tables did move
    if warps == 1 or not ON_GPU:
        assert r["in"] < 1e-4 and r["out"] < 1e-4, r
