"""Keeping the ranks' tables together: local SGD with rare, partial syncs of what changed.

Every rank trains its own copy of the tables with the fused kernel, in place, on its share of the
data. Every ``--sync-every`` steps the ranks combine what each has changed since the last sync
(``delta = table - snapshot``, one dense ``all_reduce`` per table on a contiguous slice) and all
continue from the same values. The vocabulary is sorted by frequency, so the rows that change
fastest are a prefix: sync ``k`` covers the first ``sync_rows * 2**z`` rows (``z`` = the number of
trailing zero bits of ``k``), so the hottest rows are synced every time, the next ones every other
time, ..., and the whole table every ``2**ceil(log2(V / sync_rows))`` syncs (IntelLabs
pWord2Vec's schedule), or every ``FULL_EVERY`` syncs if that comes first. Full syncs also happen
when an epoch ends on some rank and at the end. All of them fall on steps fixed by the data and
the settings, never by the clock: checkpoints wait for the next full sync (tables equal on all
ranks, one copy to save), so checkpointing, by steps, minutes or on a signal, never changes what
a run computes.

Combining (``--sync-combine``): ``rowmean`` (default) adds, for each row, the mean of the deltas of
the ranks that changed it (a rare row trained on one rank keeps its whole update; a hot row every
rank trained gets the average, as in model averaging, not N stale updates at once); ``sum`` adds
every rank's delta (what N threads of one process would do); ``mean`` averages over all ranks.

The collectives run in the same order on every rank (they are called from the synchronized
training loop), so a run is repeatable for a fixed world size. NCCL and gloo both do dense
``all_reduce`` on a contiguous slice: the same code on CPU and GPU.
"""

from __future__ import annotations

import torch

from w2v_dist.distributed import Dist

FULL_EVERY = 64  # syncs: the whole table at least this often (a checkpoint waits for one)


class TableSync:
    """>>> sync = TableSync(model.tables(), dist, every=4, rows=1024)   # doctest: +SKIP
    >>> sync.after_step(step)      # a prefix every `every` steps        # doctest: +SKIP
    >>> sync.full()                # an epoch ended, a checkpoint is due  # doctest: +SKIP
    """

    def __init__(self, tables: dict[str, torch.Tensor], dist: Dist, every: int = 4, rows: int = 1024,
                 combine: str = "rowmean"):
        self.tables, self.dist, self.every, self.rows, self.combine = tables, dist, every, rows, combine
        self.active = dist.world_size > 1
        self.syncs = 0
        self.bytes = 0  # sent by this rank
        self.snapshot = {k: t.detach().clone() for k, t in tables.items()} if self.active else {}

    def state_dict(self) -> dict:
        return {"syncs": self.syncs, "bytes": self.bytes}

    def load_state_dict(self, state: dict) -> None:
        """After the tables were loaded from a checkpoint (taken at a full sync: the snapshot is them)."""
        self.syncs, self.bytes = int(state.get("syncs", 0)), int(state.get("bytes", 0))
        for k, t in self.tables.items():
            if self.active:
                self.snapshot[k].copy_(t)

    def after_step(self, step: int) -> bool:
        """Sync if this step is due; True when the tables are now equal on all ranks."""
        if not self.active:
            return True
        if step % self.every:
            return False
        self.syncs += 1
        k = self.syncs
        V = len(next(iter(self.tables.values())))
        rows = V if k % FULL_EVERY == 0 else min(V, self.rows << ((k & -k).bit_length() - 1))
        self.sync(rows)
        return rows == V

    def full(self) -> None:
        if self.active:
            self.sync(len(next(iter(self.tables.values()))))

    @torch.no_grad()
    def sync(self, rows: int) -> None:
        for name, table in self.tables.items():
            t, snap = table[:rows], self.snapshot[name][:rows]
            delta = t - snap
            if self.combine == "rowmean":
                touched = (delta != 0).any(dim=1).to(delta.dtype)
                self.dist.all_reduce_(touched)
                self.dist.all_reduce_(delta)
                delta /= touched.clamp(min=1)[:, None]
                self.bytes += touched.numel() * touched.element_size()
            else:
                self.dist.all_reduce_(delta)
                if self.combine == "mean":
                    delta /= self.dist.world_size
            self.bytes += delta.numel() * delta.element_size()
            snap += delta
            t.copy_(snap)
