"""Keeping the ranks' tables together: local SGD with rare, partial syncs of what changed.

Every rank trains its own copy of the tables with the fused kernel, in place, on its share of the
data. Every ``--sync-every`` steps (by default 64 at 2 ranks, 16 at more) the ranks combine what
each has changed since the last sync (``delta = table - snapshot``, one dense ``all_reduce`` on a
contiguous slice of each table) and all continue from the same values. The vocabulary is sorted
by frequency, so the rows that change fastest are a prefix: sync ``k`` covers the first
``sync_rows * 2**z`` rows (``z`` = the number of trailing zero bits of ``k``), so the hottest rows
are synced every time, the next ones every other time, ..., and the whole table every
``2**ceil(log2(V / sync_rows))`` syncs (IntelLabs
pWord2Vec's schedule), or every ``FULL_EVERY`` syncs if that comes first. Full syncs also happen
when an epoch ends on some rank and at the end. All of them fall on steps fixed by the data and
the settings, never by the clock: checkpoints wait for the next full sync (tables equal on all
ranks, one copy to save), so checkpointing, by steps, minutes or on a signal, never changes what
a run computes.

``--sync-overlap`` starts a prefix sync's ``all_reduce`` and trains on: its result is applied at
the next sync, one interval late (:meth:`TableSync.start`, :meth:`TableSync.finish`); full syncs
still wait. It hides the collective where the link is slow, for rows one interval staler.

``--sync-node-every`` adds syncs among the ranks of each node (torchrun's agents: ``GROUP_RANK``)
between those of all ranks, on the same prefix schedule with a counter of their own: on a cluster
the ranks of a node talk over shared memory or NVLink, the nodes over a network, so the ranks of a
node can agree more often for the same traffic between nodes. A node's sync sets its rows to the
mean of the node's ranks' rows, which keeps the sum of their changes, so the next sync of all
ranks combines the same summed changes as without it (under ``mean``: sets the rows to the mean
over all ranks), and the snapshot stays what all ranks agreed on. Other rules would count a node's
agreed change once per rank of it, and are refused.

``--sync-dtype bfloat16`` sends and sums the changes in bfloat16 (torch's ``bf16_compress_hook``
for our deltas): half the bytes. The tables and the snapshot stay float32, so only the changes are
rounded, and every rank adds the same rounded numbers: ranks still leave a full sync bitwise equal.

``--sync step`` (the exact mode) syncs every row after every step and sums the ranks' changes:
each rank's updates are sequential within its chunk, the ranks' are added at the end of the step
(one step of staleness, as between the kernel's threads, but the plain sum: the kernel scales a
saturated row's sum back, kernels/numba_cpu.py). It sends the whole tables every step: for a few
ranks on a fast link, or to check the local mode against.

Combining (``--sync-combine``): ``mean`` (default) averages the ranks' changes (model averaging,
as pWord2Vec does) and every rank trains with the learning rate times the number of ranks (the
linear scaling rule of large-batch SGD): where a row's updates are small and add up, the mean of N
ranks' changes at N times the rate is their sum at the rate; where a frequent row's updates
saturate (its sigmoid does), each rank's change is bounded and so is their mean. The multiplier
stops where a rank's rate would pass 0.2 (``MAX_RANK_ALPHA``): past it CBOW diverged. Where it
stops short of N (CBOW past 4 ranks, skip-gram past 8), the summed changes are divided by the
multiplier instead of N, so a row one rank trained still moves as far as one process would move
it, but by at least N / ``MAX_OVERSHOOT``: a row every rank saturates then moves up to twice one
rank's change, where 4 times diverged (:func:`mean_divisor`). ``sum`` adds the
ranks' changes at the plain rate (it overshoots the frequent
rows by N and diverged at 4 ranks on gcide); ``rowmean`` averages each row over the ranks that
changed it (Spark MLlib's rule; every row a rank trains in a sync interval is "changed", so it
works out as 1/N of the progress: analogy 0.07 against 0.12 at 2 ranks). docs/distributed.md has
the measurements.

The collectives run in the same order on every rank (they are called from the synchronized
training loop), so a run is repeatable for a fixed world size. NCCL and gloo both do dense
``all_reduce`` on a contiguous slice: the same code on CPU and GPU.
"""

from __future__ import annotations

import contextlib
import time
from array import array
from typing import Iterator

import torch

from w2v_dist.config import ConfigError, alike
from w2v_dist.distributed import Dist, Pending

FULL_EVERY = 64  # syncs: the whole table at least this often (a checkpoint waits for one)
# mean: each rank trains at lr x min(N, MAX_RANK_ALPHA / alpha): the linear scaling rule up to a rate
# of 0.2 per update (CBOW at 8 x 0.05 = 0.4 diverged on gcide; at 0.2 neither model did: docs/distributed.md)
MAX_RANK_ALPHA = 0.2
# mean with the multiplier capped below N: a row every rank saturates moves at most this x one rank's
# change (CBOW on gcide at 16 ranks: 2 trained, 4 diverged; docs/distributed.md)
MAX_OVERSHOOT = 2


def auto_lr_scale(world_size: int, alpha: float) -> float:
    """The rate multiplier of ``--sync-combine mean`` when ``--sync-lr-scale`` is 0."""
    return float(max(1, min(world_size, int(MAX_RANK_ALPHA / alpha + 1e-9))))


def mean_divisor(world_size: int, lr_scale: float) -> float:
    """What ``--sync-combine mean`` divides the ranks' summed changes by, each rank trained at
    ``lr_scale`` x the rate: the multiplier, so that a row one rank trained moves as one process at
    the rate would move it (the linear scaling rule), kept between N / MAX_OVERSHOOT and N. N (the
    mean) wherever the multiplier is N or more: the default's at up to 8 ranks of skip-gram and 4 of
    CBOW. Dividing by N where the multiplier stopped at 0.2 per update moved a row one rank trained
    only multiplier / N of its way: CBOW at 8 ranks (x 4) scored 0.094 analogy on gcide, 0.114
    divided by 4 (3 seeds; one rank 0.142)."""
    return float(min(world_size, max(lr_scale, world_size / MAX_OVERSHOOT)))


def auto_sync_every(world_size: int) -> int:
    """The steps between syncs that ``--sync-every 0`` (the default) gives ``world_size`` ranks.

    Measured (docs/benchmarks.md: 3 seeds on gcide, 4 stress corpora at 2 ranks): at 2 ranks 64
    loses nothing against 16 and trains 1.3x faster (a sync costs mostly the ranks waiting for each
    other); at 4 and 8 ranks 64 loses 0.5-1 analogy point more than 16: the staleness an interval
    allows grows with the number of ranks that train apart."""
    return 64 if world_size <= 2 else 16


def check_node_every(node_every: int, every: int, world_size: int, combine: str) -> None:
    """Raise a :class:`ConfigError` where ``--sync-node-every`` cannot work with these settings
    (``every`` 0: by ``world_size``); the trainer asks before it makes the run directory."""
    if not node_every or world_size < 2:
        return
    every = every or auto_sync_every(world_size)
    if node_every >= every:
        raise ConfigError(f"--sync-node-every {node_every} must be below the steps between syncs of all ranks "
                          f"(--sync-every: {every}), or 0: the syncs within a node come between those")
    if combine != "mean":
        raise ConfigError(f"--sync-node-every works with --sync-combine mean, not {combine}: a sync of all ranks "
                          f"would count a node's agreed change once per rank of the node")


def rows_at(k: int, V: int, rows: int) -> int:
    """The prefix sync ``k`` (1, 2, ...) covers: ``rows << trailing_zeros(k)``, the whole table
    every FULL_EVERY syncs or once the prefix reaches it."""
    return V if k % FULL_EVERY == 0 else min(V, rows << ((k & -k).bit_length() - 1))


def bytes_per_sync(rows: int, dim: int, combine: str, tables: int = 2, itemsize: int = 4) -> int:
    """What a rank hands to all_reduce for a sync of ``rows`` rows of each table."""
    return tables * rows * itemsize * (dim + (combine == "rowmean"))


class TableSync:
    """>>> sync = TableSync(model.tables(), dist, every=4, rows=1024)   # doctest: +SKIP
    >>> sync.after_step(step)      # a prefix every `every` steps        # doctest: +SKIP
    >>> sync.full()                # an epoch ended, a checkpoint is due  # doctest: +SKIP
    """

    def __init__(self, tables: dict[str, torch.Tensor], dist: Dist, every: int = 0, rows: int = 1024,
                 combine: str = "mean", exact: bool = False, lr_scale: float = 0, alpha: float = 0.025,
                 overlap: bool = False, node_every: int = 0, dtype: str = "float32"):
        if exact:  # --sync step: every step, every row, changes summed
            every, rows, combine, overlap, node_every, dtype = 1, 1 << 62, "sum", False, 0, "float32"
        every = every or auto_sync_every(dist.world_size)
        self.tables, self.dist, self.every, self.rows, self.combine = tables, dist, every, rows, combine
        self.active = dist.world_size > 1
        self.overlap = overlap and self.active
        self.syncs = 0
        self.bytes = 0  # sent by this rank
        # each sync's seconds in this session, waiting for the other ranks included, in order (the
        # same syncs on every rank)
        self.durations = array("d")
        # the rows as the ranks last agreed on them: the same on every rank
        self.snapshot = {k: t.detach().clone() for k, t in tables.items()} if self.active else {}
        self.buffer: torch.Tensor | None = None  # the deltas of a sync, summed in place
        # --sync-dtype: what the deltas travel and are summed in (bfloat16: half the bytes); the
        # tables and the snapshot stay float32, every rank adds the same rounded numbers to them
        self.dtype = getattr(torch, dtype)
        self.sent: torch.Tensor | None = None  # overlapped: this rank's own deltas of the sync in flight
        self.pending: tuple[int, Pending] | None = None  # overlapped: (rows, the all_reduce in flight)
        # model averaging moves a row 1/N as far as the sum of the ranks' updates would, where the
        # updates are small and add up: the linear scaling rule (Goyal et al. 2017) gives it back,
        # up to a point: each rank trains at that rate, and 8 x --alpha diverged
        self.lr_scale = ((lr_scale or auto_lr_scale(dist.world_size, alpha)) if self.active and combine == "mean"
                         else 1)
        self.divisor = mean_divisor(dist.world_size, self.lr_scale)  # of mean's summed changes
        # --sync-node-every: syncs among the ranks of a node between those of all ranks (:meth:`sync`)
        self.node_every, self.node_syncs, self.node_bytes, self.node_size = 0, 0, 0, 1
        if node_every and self.active:
            with alike(ConfigError):
                check_node_every(node_every, every, dist.world_size, combine)
            self.node_size = len(dist.node_ranks())  # every rank makes the nodes' groups here, alike
            if max(dist.node_sizes()) > 1:  # on every rank, a node of one rank too: the count is every rank's
                self.node_every = node_every

    def full_every(self) -> int:
        """Steps between the syncs of every row in the prefix schedule (an epoch's start adds one)."""
        V, k = len(next(iter(self.tables.values()))), 1
        while rows_at(k, V, self.rows) < V:  # sync 2^z covers rows << z, and FULL_EVERY (a power of 2) all
            k *= 2
        return self.every * k

    def state_dict(self) -> dict:
        return {"syncs": self.syncs, "bytes": self.bytes, "node_syncs": self.node_syncs, "node_bytes": self.node_bytes}

    def load_state_dict(self, state: dict) -> None:
        """After the tables were loaded from a checkpoint (taken at a full sync: the snapshot is them)."""
        self.syncs, self.bytes = int(state.get("syncs", 0)), int(state.get("bytes", 0))
        self.node_syncs, self.node_bytes = int(state.get("node_syncs", 0)), int(state.get("node_bytes", 0))
        for k, t in self.tables.items():
            if self.active:
                self.snapshot[k].copy_(t)

    def after_step(self, step: int, full: bool = False) -> bool:
        """Sync if this step is due, every row if ``full`` (an epoch began on some rank); True when
        the tables are now equal on all ranks: a checkpoint can be taken."""
        if not self.active:
            return True
        V = len(next(iter(self.tables.values())))
        if step % self.every:
            if full:
                self.full()
            elif self.node_every and step % self.node_every == 0:
                # counted on every rank alike, a node of one rank too (it has nothing to sync): the
                # checkpoint keeps rank 0's count, from which every node's prefix schedule resumes
                self.node_syncs += 1
                if self.node_size > 1:
                    with self._timed():
                        self.sync(rows_at(self.node_syncs, V, self.rows), node=True)
            return full
        self.syncs += 1
        rows = V if full else rows_at(self.syncs, V, self.rows)
        with self._timed():
            (self.start if self.overlap and rows < V else self.sync)(rows)
        return rows == V

    def full(self) -> None:
        if self.active:
            with self._timed():
                self.sync(len(next(iter(self.tables.values()))))

    @contextlib.contextmanager
    def _timed(self) -> Iterator[None]:
        """A sync's seconds, waiting for the other ranks included, appended to ``durations``."""
        t = time.perf_counter()
        yield
        self.durations.append(time.perf_counter() - t)

    def _deltas(self, rows: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Each table's first ``rows`` rows less their snapshot, into the run's one buffer: (the
        flat buffer to all_reduce, its deltas as (tables, rows, dim), rowmean's touched flags). On
        loaded cores a collective's cost is its round trips more than its bytes, so both tables go
        in one; allocating and concatenating them anew every sync cost 11 ms of a rank's core per
        sync (2 ranks, 2 epochs of gcide: 0.38 s of CPU in 35 syncs; with the buffer 0.24 s)."""
        names, first = list(self.tables), next(iter(self.tables.values()))
        dim, flags = first.shape[1], self.combine == "rowmean"
        if self.buffer is None:  # a full sync's size
            self.buffer = first.new_empty(len(names) * len(first) * (dim + flags), dtype=self.dtype)
        flat = self.buffer[:len(names) * rows * (dim + flags)]
        deltas = flat[:len(names) * rows * dim].view(len(names), rows, dim)
        for i, k in enumerate(names):
            torch.sub(self.tables[k][:rows], self.snapshot[k][:rows], out=deltas[i])
        touched = None
        if flags:
            touched = flat[len(names) * rows * dim:].view(len(names), rows, 1)
            for i in range(len(names)):
                touched[i].copy_((deltas[i] != 0).any(dim=1, keepdim=True))
        return flat, deltas, touched

    def _combine(self, summed: torch.Tensor, touched: torch.Tensor | None, ranks: int = 0) -> None:
        """The ``ranks``' (all ranks') summed deltas, in place, to the change every rank applies."""
        for i in range(len(summed)):
            if self.combine == "rowmean":
                summed[i] /= touched[i].clamp(min=1)
            elif self.combine == "mean":  # a node's sync (ranks): its ranks' mean
                summed[i] /= ranks or self.divisor

    @torch.no_grad()
    def sync(self, rows: int, node: bool = False) -> None:
        """One all_reduce for both tables' prefixes (and, for rowmean, their touched-row flags);
        the ranks wait for it and leave with equal rows. With ``node`` (``--sync-node-every``), among
        the ranks of this rank's node only, and the snapshot stays what all ranks agreed on: a node
        sync leaves the node's ranks with the mean of their rows whatever common snapshot the
        changes are taken from, which keeps the sum of their changes, so the next sync of all ranks
        combines the same sum (under ``mean`` divided by N: the mean over all ranks): as if every
        sync had been of all ranks, with the node's ranks closer together in between."""
        self.finish()
        flat, deltas, touched = self._deltas(rows)
        self.dist.all_reduce_(flat, node=node)
        self.bytes += flat.numel() * flat.element_size()
        self.node_bytes += flat.numel() * flat.element_size() if node else 0
        self._combine(deltas, touched, self.node_size if node else 0)
        for i, k in enumerate(self.tables):
            snap = self.snapshot[k][:rows]
            if node:
                torch.add(snap, deltas[i], out=self.tables[k][:rows])
                continue
            snap += deltas[i]
            self.tables[k][:rows].copy_(snap)

    @torch.no_grad()
    def start(self, rows: int) -> None:
        """``--sync-overlap``: send this rank's deltas and train on while they are summed; the
        ranks' combined change arrives at the next sync (:meth:`finish`), one interval late."""
        self.finish()
        flat, deltas, _ = self._deltas(rows)
        if self.sent is None:
            self.sent = torch.empty_like(self.buffer)
        self.sent[:deltas.numel()].copy_(deltas.reshape(-1))
        self.bytes += flat.numel() * flat.element_size()
        self.pending = (rows, self.dist.all_reduce_start(flat))

    @torch.no_grad()
    def finish(self) -> None:
        """Apply the overlapped sync in flight, if any. The snapshot (the rows the ranks agreed on)
        adds the ranks' combined change: the same numbers on every rank, so a full sync leaves
        the ranks' tables bitwise equal. The table gets the combined change in place of this
        rank's own, which it already has, and keeps what the rank trained since it sent."""
        if self.pending is None:
            return
        rows, work = self.pending
        self.pending = None
        work.wait()
        names, dim = list(self.tables), next(iter(self.tables.values())).shape[1]
        n, flags = len(names) * rows * dim, self.combine == "rowmean"
        combined = self.buffer[:n].view(len(names), rows, dim)
        touched = self.buffer[n:n + len(names) * rows].view(len(names), rows, 1) if flags else None
        self._combine(combined, touched)
        sent = self.sent[:n].view(len(names), rows, dim)
        for i, k in enumerate(names):
            self.snapshot[k][:rows] += combined[i]
            combined[i] -= sent[i]
            self.tables[k][:rows] += combined[i]
