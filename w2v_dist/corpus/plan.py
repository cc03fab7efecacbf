"""Who reads what: the per-epoch plan of work units, dealt to every (rank, DataLoader worker).

A pure function of (shard manifest with per-row-group token counts, seed, epoch, number of
slots), so every process computes the same plan without talking to the others:

- the unit of work is a row group, or a row range of one: a row group holding more than
  ``total tokens / (slots * UNITS_PER_SLOT)`` tokens is cut into row ranges of about that size,
  so that even a corpus of one big shard balances;
- each epoch the units are shuffled from ``(seed, epoch)``, then dealt greedily by tokens
  (largest first, to the slot with the fewest tokens so far, counting the epochs before), and
  each slot reads its units in shuffled order;
- every row of every shard is in exactly one unit, and every unit goes to exactly one slot:
  each row is read once per epoch across all ranks and workers. Slots may still end up with
  different amounts of data (a single huge row cannot be split); the trainer keeps ranks in step
  (:func:`w2v_dist.distributed.synchronized`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# At least this many units per slot and epoch: the shuffle's grain. A corpus sorted by anything
# (a dictionary by headword, logs by date) trains on mixed data only if the grain is fine: on
# gcide, 32 instead of 4 units gave +0.6 analogy and +0.6 WS-353 points (docs/benchmarks.md).
# Splitting a row group makes the first epoch read it once per unit (later epochs read the token
# cache); a large corpus has units of whole row groups anyway.
UNITS_PER_SLOT = 32


@dataclass(frozen=True)
class Unit:
    shard: int
    row_group: int
    start: int  # first row, inside the row group
    stop: int  # one past the last row
    tokens: int  # tokens in these rows (estimated by row share when a row group is split)


def make_units(row_groups: list[list[tuple[int, int]]], slots: int) -> list[Unit]:
    """``row_groups[shard][g] = (rows, tokens)`` -> units, in manifest order."""
    total = sum(t for shard in row_groups for _, t in shard)
    target = max(total // max(slots * UNITS_PER_SLOT, 1), 1)
    units = []
    for s, shard in enumerate(row_groups):
        for g, (rows, tokens) in enumerate(shard):
            if rows == 0:
                continue
            pieces = int(min(rows, max(1, -(-tokens // target))))
            bounds = np.linspace(0, rows, pieces + 1).round().astype(int)
            for a, b in zip(bounds[:-1], bounds[1:]):
                units.append(Unit(s, g, int(a), int(b), int(tokens * (b - a) // rows)))
    return units


def assign(units: list[Unit], slots: int, seed: int, epoch: int) -> list[list[Unit]]:
    """This epoch's units of every slot (slot = rank * workers + worker).

    The deal starts from the tokens each slot got in the epochs before: an epoch's deal balances to
    within about one unit, and dealt alone every epoch gave the same slot the extra unit (gcide at 2
    ranks: 62k tokens, 2.7 %, every epoch), so the ranks ended a run that many steps apart, the
    others stepping empty. Carried over, the extra goes to another slot the next epoch and the run
    stays within one unit."""
    load = np.zeros(slots, dtype=np.int64)
    for e in range(epoch + 1):  # one deal per epoch so far: thousands of units, once per epoch
        order = np.random.default_rng([seed, e, 0x5EED]).permutation(len(units))
        shuffled = [units[i] for i in order]
        owner = deal([max(u.tokens, 1) for u in shuffled], load)
    return [[u for u, o in zip(shuffled, owner) if o == s] for s in range(slots)]


def deal(sizes: list[int], load: np.ndarray) -> np.ndarray:
    """Greedy balancing: each item, largest first (ties in the given order), to the slot with the
    least ``load`` so far (ties: the lowest slot); ``load`` is updated. Returns each item's slot."""
    owner = np.empty(len(sizes), dtype=np.int64)
    for i in sorted(range(len(sizes)), key=lambda i: -sizes[i]):  # once per item: thousands, not per token
        s = int(np.argmin(load))
        owner[i] = s
        load[s] += sizes[i]
    return owner


def ranks_without_data(row_groups: list[list[tuple[int, int]]], ranks: int, workers: int,
                       seed: int) -> tuple[list[int], int]:
    """Ranks none of whose slots gets a unit with words, and how many units have words: a corpus
    of fewer rows than slots (a row is never split) leaves ranks idle. The same ranks every epoch:
    the units with words are dealt first, each to the lowest-numbered slot still empty."""
    slots = ranks * workers
    units = make_units(row_groups, slots)
    busy = {s // workers for s, mine in enumerate(assign(units, slots, seed, 0)) if any(u.tokens for u in mine)}
    return [r for r in range(ranks) if r not in busy], sum(1 for u in units if u.tokens)
