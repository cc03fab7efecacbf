"""TensorBoard scalars of a run, the PyTorch way (``torch.utils.tensorboard.SummaryWriter``): rank 0
writes one point per ``metrics.jsonl`` line to ``<run>/tensorboard/``.

    pip install 'w2v-dist[viz]'
    tensorboard --logdir runs/r1/tensorboard     # or --logdir runs/ to compare runs

The step axis is the global number of words trained (``words`` in ``metrics.jsonl``), which does
not depend on the number of ranks or on where a run was resumed. Tags: ``train/loss`` (per
example, over the interval), ``train/lr``, ``train/words_per_s``, ``train/progress``,
``train/epoch``; with several ranks also ``sync/bytes_per_rank`` (sent to the table syncs so far,
by each rank) and ``ranks/words_per_s/rank_<r>``.

A resumed run continues the same curves: its writer opens a new event file with
``purge_step = words of the checkpoint + 1``, so TensorBoard (and its ``EventAccumulator``) drops
what the attempt before logged past the checkpoint it resumed from, and the new attempt's points
follow without duplicated or restarted steps. The dropped points stay in the older event file.

The writer writes into a local staging directory; after each point the event file is copied to
``<run>/tensorboard/`` through :mod:`w2v_dist.storage` (like ``metrics.jsonl``, rewritten at each
interval), so a run on any fsspec URI gets its curves, and ``tensorboard --logdir`` on a local run
shows them while it trains.
"""

from __future__ import annotations

import glob
import logging
import os
import shutil
import tempfile

from w2v_dist import storage

log = logging.getLogger("w2v_dist.train")

# (tag, metrics.jsonl key)
SCALARS = (("train/loss", "loss"), ("train/lr", "lr"), ("train/words_per_s", "words_per_s"),
           ("train/progress", "progress"), ("train/epoch", "epoch"), ("train/data_wait", "data_wait"),
           ("sync/bytes_per_rank", "sync_bytes"))


class Board:
    """>>> board = Board("runs/r1", purge_step=1)                       # doctest: +SKIP
    >>> board.write({"words": 10_000, "loss": 3.1, "lr": 0.024})    # doctest: +SKIP
    >>> board.close()                                                # doctest: +SKIP
    """

    def __init__(self, run_uri: str, storage_options: dict | None = None, purge_step: int = 1):
        from torch.utils.tensorboard import SummaryWriter

        self.uri = storage.join(run_uri, "tensorboard")
        self.storage_options = storage_options
        _sweep_staging()
        # removed at close and at exit; named by the pid, so that a SIGKILLed run's is swept by the next
        self._staging = tempfile.TemporaryDirectory(prefix=f"{STAGING_PREFIX}{os.getpid()}-")
        self.writer = SummaryWriter(self._staging.name, purge_step=purge_step)
        self.last_step = purge_step - 1  # a point only where the words advanced: steps never repeat
        self._upload()

    def write(self, rec: dict) -> None:
        """One ``metrics.jsonl`` record as scalars at step ``rec["words"]``. Records whose words did
        not advance (several ranks log between two exchanges of their word counts) are left out."""
        step = int(rec["words"])
        if step <= self.last_step:
            return
        self.last_step = step
        for tag, key in SCALARS:
            if key in rec and not (key == "loss" and rec.get("examples") == 0):  # no examples: no loss
                self.writer.add_scalar(tag, rec[key], step)
        for r, rate in enumerate(rec.get("rank_words_per_s", ())):
            self.writer.add_scalar(f"ranks/words_per_s/rank_{r}", rate, step)
        self._upload()

    def _upload(self) -> None:
        self.writer.flush()
        for name in os.listdir(self._staging.name):
            with open(os.path.join(self._staging.name, name), "rb") as f:
                storage.write_bytes(storage.join(self.uri, name), f.read(), self.storage_options)

    def close(self) -> None:
        self._upload()
        self.writer.close()
        self._staging.cleanup()


STAGING_PREFIX = "w2v_dist-tensorboard-"


def _sweep_staging() -> None:
    """Remove the staging directories of runs that are gone (SIGKILLed: nothing removed theirs; a
    machine that ran the tests had 348 of them in /tmp)."""
    for path in glob.glob(os.path.join(tempfile.gettempdir(), STAGING_PREFIX + "*-*")):
        pid = os.path.basename(path)[len(STAGING_PREFIX):].split("-", 1)[0]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except OSError:  # alive (another user's: not ours to look at)
            pass


def open_board(run_uri: str, storage_options: dict | None = None, purge_step: int = 1) -> Board | None:
    """A :class:`Board` for ``run_uri``, or None (and one log line saying how to get one) when the
    ``tensorboard`` package is not installed: training does not need it."""
    try:
        return Board(run_uri, storage_options, purge_step)
    except ImportError:
        log.info("no TensorBoard curves for this run: the tensorboard package is not installed "
                 "(pip install 'w2v-dist[viz]'); metrics.jsonl has the same numbers, and `w2v-dist plot` draws them")
        return None
