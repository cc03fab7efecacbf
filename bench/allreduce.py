"""gloo's all_reduce of a sync's buffer (both tables' first ROWS rows, d = 100) in float32,
float16 and bfloat16: what ``--sync-dtype`` changes in a collective's own time on this machine.

    torchrun --nproc-per-node 2 bench/allreduce.py            # 1,024, 8,192 and 42,000 rows
    torchrun --nproc-per-node 2 bench/allreduce.py 1024 --repeat 100
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.distributed as dist


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("rows", type=int, nargs="*", default=[1024, 8192, 42000])
    p.add_argument("--dim", type=int, default=100)
    p.add_argument("--repeat", type=int, default=30)
    a = p.parse_args()
    dist.init_process_group("gloo")
    for rows in a.rows:
        for dtype in (torch.float32, torch.float16, torch.bfloat16):
            t = torch.randn(2 * rows * a.dim).to(dtype)
            dist.all_reduce(t)  # the first one sets up the pair's buffers
            dist.barrier()
            times = []
            for _ in range(a.repeat):
                start = time.perf_counter()
                dist.all_reduce(t)
                times.append(time.perf_counter() - start)
            if dist.get_rank() == 0:
                print(f"{rows:7,d} rows {str(dtype)[6:]:9s} {t.numel() * t.element_size() / 1e6:6.1f} MB  "
                      f"median {statistics.median(times) * 1e3:6.2f} ms  min {min(times) * 1e3:6.2f} ms", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
