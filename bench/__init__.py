"""Benchmarks (scripts run as ``python bench/NAME.py``) and what they share."""

from __future__ import annotations

import sys


def w2v_dist_command(ranks: int = 1) -> list[str]:
    """The real entry point, ``python -m w2v_dist``, under ``torchrun --standalone`` for several ranks;
    the command's own arguments follow."""
    launch = [sys.executable] if ranks == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(ranks)]
    return [*launch, "-m", "w2v_dist"]
