"""Test-only fault injection, so the tests can kill a rank at an exact point of a real run.

``W2V_DIST_FAULT=<action>@<point>:<rank>:<step>``, e.g. ``kill@step:1:12`` (rank 1 SIGKILLs
itself after step 12), ``kill@save:0:10`` (rank 0 dies between a checkpoint's payload and its
manifest), ``raise@step:1:5`` (an exception, for torchrun's error report), ``term@step:0:7``
(SIGTERM to itself: a preemption), ``term-launcher@step:0:5`` (SIGTERM to its parent, torchrun's
agent: a scheduler's preemption, which the agent passes on to every rank), ``int@prepare-shard:0:2`` (Ctrl-C in ``prepare`` once its
second shard is written), ``int@vocab:0:1`` (Ctrl-C in the vocabulary pass after a row group),
``diverge@loss:2:3`` (rank 2's loss of step 3 becomes NaN: ``maybe_fail`` returns True),
``enospc@write:vectors.npy:0:0`` (a full disk: the local write of that file raises ENOSPC; the
step is 0 and the rank 0 in whatever process writes), ``kill@write:summary.json:0:0``. Fires only
on torchrun's first attempt
(``TORCHELASTIC_RESTART_COUNT`` unset or 0), so a restarted run goes through.
"""

from __future__ import annotations

import errno
import os
import signal


def maybe_fail(point: str, rank: int, step: int) -> bool:
    spec = os.environ.get("W2V_DIST_FAULT")
    if not spec or os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") != "0":
        return False
    action_point, want_rank, want_step = spec.rsplit(":", 2)
    action, _, want_point = action_point.partition("@")
    if want_point != point or int(want_rank) != rank or int(want_step) != step:
        return False
    if action == "diverge":
        return True
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "term":
        os.kill(os.getpid(), signal.SIGTERM)
    elif action == "term-launcher":
        os.kill(os.getppid(), signal.SIGTERM)
    elif action == "int":
        os.kill(os.getpid(), signal.SIGINT)
    elif action == "enospc":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    elif action == "raise":
        raise RuntimeError(f"injected fault at {point} {step} on rank {rank} (W2V_DIST_FAULT={spec})")
    return False
