"""The torch reference step alone (``--kernel torch``, the CUDA path): time per mini-batch and
examples/s for several ``--batch-pairs``, with rows added in a fixed order (the default) and with
atomics (``--nondeterministic``), and the same step replayed as a CUDA graph (one launch instead of
one per op: what the launches cost). Skip-gram, V = 42,026 (gcide's vocabulary), d = 100,
5 negatives, indices drawn from a Zipf law as a frequency-sorted vocabulary's are.

    python bench/torch_step.py --device cuda
    python bench/torch_step.py --device cpu --batches 256 1024 --steps 200

Also says whether two runs of the same steps from the same tables give bitwise the same tables.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from w2v_dist.kernels.reference import sg_step  # noqa: E402


def zipf_ids(rng: np.random.Generator, V: int, shape) -> np.ndarray:
    p = 1.0 / np.arange(1, V + 1)
    return rng.choice(V, size=shape, p=p / p.sum()).astype(np.int64)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batches", type=int, nargs="+", default=[256, 1024, 4096])
    p.add_argument("--steps", type=int, default=500, help="mini-batches timed per setting")
    p.add_argument("--vocab", type=int, default=42_026)
    p.add_argument("--dim", type=int, default=100)
    a = p.parse_args()
    dev = torch.device(a.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    rng = np.random.default_rng(0)
    g = torch.Generator().manual_seed(1)
    start_in = ((torch.rand(a.vocab, a.dim, generator=g) * 2 - 1) / a.dim).to(dev)
    start_out = torch.zeros(a.vocab, a.dim, device=dev)  # as training starts
    print(f"device {dev} ({torch.cuda.get_device_name(dev) if dev.type == 'cuda' else 'cpu'}), torch {torch.__version__}")
    print("| batch pairs | adds | µs per mini-batch | examples/s | repeat bitwise |")
    print("|---|---|---|---|---|")
    for B in a.batches:
        data = [tuple(torch.from_numpy(x).to(dev) for x in (zipf_ids(rng, a.vocab, B), zipf_ids(rng, a.vocab, B),
                                                             zipf_ids(rng, a.vocab, (B, 5))))
                for _ in range(a.steps)]
        for deterministic in (True, False):
            ends = []
            for _ in range(2):
                W_in, W_out = start_in.clone(), start_out.clone()
                for x in data[:5]:  # warm-up (allocator, kernels' first launch)
                    sg_step(W_in, W_out, *x, 0.025, deterministic)
                sync()
                t0 = time.perf_counter()
                for x in data:
                    sg_step(W_in, W_out, *x, 0.025, deterministic)
                sync()
                dt = time.perf_counter() - t0
                ends.append(W_in.cpu())
            # compared as bits: a table gone to NaN (a summed step that diverged) still compares
            same = torch.equal(ends[0].view(torch.int32), ends[1].view(torch.int32))
            same = f"{same}" + ("" if bool(torch.isfinite(ends[0]).all()) else " (not finite)")
            print(f"| {B} | {'fixed order' if deterministic else 'atomics'} | {dt / a.steps * 1e6:.0f} "
                  f"| {B * a.steps / dt:,.0f} | {same} |", flush=True)
        if dev.type == "cuda":
            try:
                us = graph_us(start_in, start_out, data, a.steps)
                print(f"| {B} | fixed order, CUDA graph | {us:.0f} | {B / us * 1e6:,.0f} | - |", flush=True)
            except Exception as e:  # noqa: BLE001 - a measurement that cannot be made is reported
                print(f"| {B} | fixed order, CUDA graph | failed: {type(e).__name__}: {str(e).splitlines()[0][:120]} | | |")


def graph_us(start_in, start_out, data, steps: int) -> float:
    """µs per mini-batch of the step captured once as a CUDA graph and replayed, each replay after
    copying the next mini-batch into the captured inputs (as a run would)."""
    W_in, W_out = start_in.clone(), start_out.clone()
    static = tuple(x.clone() for x in data[0])
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            sg_step(W_in, W_out, *static, 0.025)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        sg_step(W_in, W_out, *static, 0.025)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for x in data:
        for s, v in zip(static, x):
            s.copy_(v)
        graph.replay()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / steps * 1e6


if __name__ == "__main__":
    main()
