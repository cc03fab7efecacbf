"""Process setup in one place. Everything else receives a :class:`Dist` and calls the few
collectives here; nothing else touches ``torch.distributed``.

One entry point, one process or many: with ``RANK`` unset (no torchrun) this is a single
process and no process group is created (nanoGPT's ``ddp = int(os.environ.get('RANK', -1)) != -1``).
"""

from __future__ import annotations

import contextlib
import datetime
import gc
import itertools
import os
import socket
import time
from array import array
from dataclasses import dataclass, field
from typing import Iterator

import torch
import torch.distributed as td

from w2v_dist.config import ConfigError, raised_alike


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    device: str = "cpu"
    backend: str | None = None
    # the overlapped table syncs' own process group, made at the first (on every rank alike): on
    # NCCL a collective queues behind the ones before it in its group, so the lockstep exchange
    # would wait for the tables' all_reduce in flight
    _groups: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_local_main(self) -> bool:
        return self.local_rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1 or self.backend is not None

    def barrier(self) -> None:
        if self.backend is not None:
            td.barrier()

    def broadcast_object(self, obj, src: int = 0):
        if self.backend is None:
            return obj
        box = [obj]
        td.broadcast_object_list(box, src=src)
        return box[0]

    def on_main(self, fn, errors: tuple[type[BaseException], ...] = ()):
        """``fn()``, run by rank 0 alone and handed to every rank (N ranks reading one manifest
        would be N times the requests to the store). One of ``errors`` raised there is raised on
        every rank (marked ``every_rank``: said once, by rank 0): none is left waiting in the broadcast."""
        found = None
        if self.is_main:
            try:
                found = (True, fn())
            except errors as e:
                found = (False, e)
        ok, value = self.broadcast_object(found)
        if not ok:
            raise raised_alike(value)  # rank 0's error, raised by all: the CLI says it once
        return value

    def on_every(self, fn, errors: tuple[type[BaseException], ...] = ()) -> list:
        """``fn()`` on every rank, gathered: every rank's result, in rank order. One of ``errors``
        raised on some rank is raised on every rank (the lowest such rank's, marked ``every_rank``:
        said once, by rank 0), so no rank is left waiting for one that stopped."""
        try:
            mine = (True, fn())
        except errors as e:
            mine = (False, e)
        gathered = self.all_gather_object(mine)
        for ok, value in gathered:
            if not ok:
                raise raised_alike(value)
        return [value for _, value in gathered]

    def all_reduce_sum(self, values: list[int]) -> list[int]:
        if self.backend is None:
            return list(values)
        t = torch.tensor(values, dtype=torch.int64, device=self.device)
        td.all_reduce(t)
        return t.tolist()

    def min_over_ranks(self, values: torch.Tensor) -> torch.Tensor:
        """The element-wise minimum over the ranks of ``values`` (the same length on every rank), on the CPU."""
        if self.backend is None:
            return values
        t = values.to(self.device, copy=True)
        td.all_reduce(t, op=td.ReduceOp.MIN)
        return t.cpu()

    def all_reduce_(self, tensor: torch.Tensor, node: bool = False) -> torch.Tensor:
        """Sum ``tensor`` over ranks, in place (a dense collective: gloo and NCCL alike); with ``node``,
        over the ranks of this rank's node only (:meth:`node_ranks`)."""
        if self.backend is not None:
            td.all_reduce(tensor, group=self._groups["node"][0] if node else None)
        return tensor

    def node_ranks(self) -> list[int]:
        """The ranks on this rank's node, in order: a node is torchrun's ``GROUP_RANK`` (the agent
        that started the rank), else the host name. The first call makes the nodes' process groups,
        so every rank makes it, at the same point (as every collective)."""
        if self.backend is None:
            return [self.rank]
        if "node" not in self._groups:
            mine = os.environ.get("GROUP_RANK") or socket.gethostname()
            nodes: dict[str, list[int]] = {}
            for rank, node in enumerate(self.all_gather_object(mine)):
                nodes.setdefault(node, []).append(rank)
            group, _ = td.new_subgroups_by_enumeration(list(nodes.values()), backend=self.backend)
            self._groups["node"] = (group, nodes[mine], [len(ranks) for ranks in nodes.values()])
        return self._groups["node"][1]

    def node_sizes(self) -> list[int]:
        """The number of ranks on each node, in the order of their first ranks (after :meth:`node_ranks`)."""
        return self._groups["node"][2] if "node" in self._groups else [1]

    def all_reduce_start(self, tensor: torch.Tensor) -> "Pending":
        """Start summing ``tensor`` over ranks, in place, in a process group of its own; the sum is
        there after the returned handle's ``wait()``. Every rank starts the same ones in the same order."""
        if self.backend is None:
            return Pending(None)
        if "overlap" not in self._groups:
            self._groups["overlap"] = td.new_group(backend=self.backend)
        return Pending(td.all_reduce(tensor, group=self._groups["overlap"], async_op=True))

    def all_gather_object(self, obj) -> list:
        if self.backend is None:
            return [obj]
        out = [None] * self.world_size
        td.all_gather_object(out, obj)
        return out


@dataclass
class Pending:
    """A collective in flight (torch's ``Work``), or none (one process)."""
    work: object

    def wait(self) -> None:
        if self.work is not None:
            self.work.wait()
            self.work = None


class Lockstep:
    """What a rank has not yet told the others: words trained and flags raised since the last
    exchange (part of a checkpoint, so a resumed run exchanges the same sums)."""

    def __init__(self, every: int = 1):
        self.every = every
        self.words = 0
        self.flags: list[int] = []
        self.rank_words: list[int] = []  # words each rank trained in this attempt, as of the last exchange
        # each exchange's seconds in this session, waiting for the other ranks included, in order
        # (the same exchanges on every rank)
        self.durations = array("d")

    def state_dict(self) -> dict:
        return {"words": self.words, "flags": list(self.flags)}

    def load_state_dict(self, state: dict) -> None:
        self.words, self.flags = int(state.get("words", 0)), list(state.get("flags", []))


def synchronized(batches: Iterator, dist: Dist, words_of, flags=lambda b: [], lock: Lockstep | None = None,
                 step: int = 0) -> Iterator[tuple[object, int, list[int]]]:
    """Every rank steps together until the last rank runs out of data.

    Every ``lock.every`` steps (from ``step``, the run's step count) the ranks all-reduce
    (ranks with data, words trained since the last exchange, *flags raised since then*): a rank
    whose stream is done keeps stepping with ``None`` (nothing to train, still in every collective)
    until no rank has data, so no rank is left waiting in a collective. Steps between exchanges
    yield 0 words and no flags: the learning rate holds until the next exchange adds the interval's
    summed words, so N ranks decay exactly as one process over the same corpus at every exchange,
    and the summed ``flags(batch)`` (checkpoint now, stop now, ...) reach every rank at the same
    step. One process yields every batch's own words and flags, every step.
    """
    lock = lock or Lockstep()
    it = iter(batches)
    try:
        while True:
            b = next(it, None)
            if dist.backend is None:
                if b is None:
                    return
                yield b, words_of(b), flags(b)
                continue
            raised = flags(b)
            lock.flags = [max(x, y) for x, y in zip(lock.flags, raised)] if lock.flags else list(raised)
            lock.words += words_of(b) if b is not None else 0
            if step % lock.every:
                step += 1
                yield b, 0, [0] * len(raised)
                continue
            # each rank's words in its own slot: the sums are every rank's words (its throughput, for
            # the logs), for world_size more integers in a collective that runs anyway
            mine = [0] * dist.world_size
            mine[dist.rank] = lock.words
            t = time.perf_counter()
            active, *rest = dist.all_reduce_sum([int(b is not None), *lock.flags, *mine])
            lock.durations.append(time.perf_counter() - t)
            summed, per_rank = rest[:len(lock.flags)], rest[len(lock.flags):]
            words = sum(per_rank)
            lock.rank_words = [a + b for a, b in zip(lock.rank_words or [0] * dist.world_size, per_rank)]
            lock.words, lock.flags = 0, []
            if active == 0 and words == 0:
                return
            step += 1
            yield b, words, summed  # with active == 0: the last interval's words, no batch
            if active == 0:
                return
    finally:  # however this ends (a collective failed, the loop raised), the readers stop now,
        close = getattr(it, "close", None)  # not when the garbage collector gets to them
        if close is not None:
            close()


def device_for(requested: str, local_rank: int = 0, local_world: int = 1, backend: str | None = None,
               gpus: int | None = None) -> str:
    """``--device`` for this rank: ``cuda`` is ``cuda:LOCAL_RANK`` (torchrun's convention). Raises a
    :class:`ConfigError` (the same on every rank of the node) where it cannot work: no GPU seen, more
    ranks than GPUs, a named GPU that is not there, or every rank of a node on one named GPU with
    NCCL, which refuses that ("Duplicate GPU detected", seen on an H200; gloo shares one GPU)."""
    if not requested.startswith("cuda"):
        return requested
    gpus = torch.cuda.device_count() if gpus is None else gpus
    if gpus == 0:
        raise raised_alike(ConfigError(f"--device {requested}: torch sees no CUDA device here (torch "
                                       f"{torch.__version__}; a CPU build, or no GPU); use --device cpu"))
    if requested == "cuda":
        if local_world > gpus:  # every rank of the node says so, not only those past the last GPU
            raise raised_alike(ConfigError(
                f"--device cuda puts rank r on cuda:LOCAL_RANK, but this node has {gpus} GPU(s) and {local_world} "
                f"ranks; launch torchrun --nproc-per-node {gpus} (or --device cuda:0 --backend gloo to share one)"))
        return f"cuda:{local_rank}"
    index = int(requested.split(":")[1])
    if index >= gpus:
        raise raised_alike(ConfigError(f"--device {requested}: this node has {gpus} GPU(s), cuda:0 to cuda:{gpus - 1}"))
    if local_world > 1 and (backend or "nccl") == "nccl":
        raise raised_alike(ConfigError(
            f"--device {requested} puts all {local_world} ranks of this node on one GPU, which NCCL refuses; use "
            f"--device cuda (rank r on cuda:LOCAL_RANK), or --backend gloo to share the GPU"))
    return requested


# How long the ranks wait for each other at the start, each with word of whether its command line
# was accepted. torchrun starts them together, seconds apart; a rank missing past this stopped
# before it could say so (its node's log says why), and the others stop rather than wait for it
# in the process group's rendezvous (its timeout, 30 min).
START_WAIT_S = 300.0
_MEETINGS = itertools.count()


class StartError(RuntimeError):
    """A rank never came to the start (it stopped first): the others stop too, saying which."""


def _store(rank: int, world: int, timeout: datetime.timedelta) -> tuple[td.Store, bool]:
    """The job's store under this attempt's key prefix, and whether this process hosts it. The
    rendezvous store outlives a torchrun restart (the agent hosts it): keys of the attempt that
    died (a dead rank's gloo address) would be read by the new one and its connections refused."""
    agent_store = os.environ.get("TORCHELASTIC_USE_AGENT_STORE", "").lower() == "true"
    hosting = rank == 0 and not agent_store
    store = td.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world, is_master=hosting,
                        timeout=timeout)
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    return td.PrefixStore(f"w2v_dist/attempt-{attempt}", store), hosting


def ranks_text(ranks: list[int]) -> str:
    """``rank 3``, ``ranks 1, 3``, ``ranks 4-7``."""
    if len(ranks) == 1:
        return f"rank {ranks[0]}"
    runs: list[list[int]] = []
    for r in ranks:
        if runs and r == runs[-1][-1] + 1:
            runs[-1].append(r)
        else:
            runs.append([r])
    return "ranks " + ", ".join(f"{run[0]}-{run[-1]}" if len(run) > 2 else ", ".join(map(str, run)) for run in runs)


def _meet(store: td.Store, rank: int, world: int, error: BaseException | None, hosting: bool) -> None:
    """Every rank says whether it can start, and waits for every other's word, before the process
    group: a rank whose command line was refused (a flag mistyped on one node's command) left the
    others waiting in the group's rendezvous for 30 minutes, or, where it hosted the store, gave
    them a page of gloo frames and no word of why. Now every rank raises the same error, marked
    ``every_rank`` (said once, by rank 0), naming the ranks that refused where not all did."""
    said = "" if error is None else (str(error).strip().splitlines() or [type(error).__name__])[0]
    meeting = next(_MEETINGS)  # a process that trains twice (the Python API) meets twice
    store.set(f"meet-{meeting}/start/{rank}", said)
    keys = [f"meet-{meeting}/start/{r}" for r in range(world)]
    try:
        store.wait(keys, datetime.timedelta(seconds=START_WAIT_S))
    except td.DistStoreError:
        missing = [r for r in range(world) if not store.check([keys[r]])]
        it = "it" if len(missing) == 1 else "they"
        e = StartError(f"{ranks_text(missing)} of {world} did not start within {START_WAIT_S:.0f} s: {it} stopped before "
                       f"{it} could say why (see the node's log, or torchrun's report of the exit); the others stop too")
        raise raised_alike(e) if 0 not in missing else e
    refused = {r: text.decode() for r, text in enumerate(store.get(k) for k in keys) if text}
    if not refused:
        return
    store.set(f"meet-{meeting}/read/{rank}", "")  # the store's host leaves once every rank has read the others' word
    if hosting:
        with contextlib.suppress(td.DistStoreError):
            store.wait([f"meet-{meeting}/read/{r}" for r in range(world)], datetime.timedelta(seconds=60))
    by_text: dict[str, list[int]] = {}
    for r, text in refused.items():
        by_text.setdefault(text, []).append(r)
    if len(refused) == world and len(by_text) == 1:
        e = ConfigError(next(iter(by_text)))
    else:
        accepted = [r for r in range(world) if r not in refused]
        e = ConfigError("; ".join(f"{text} (on {ranks_text(rs)})" for text, rs in list(by_text.items())[:3])
                        + (f" and {len(by_text) - 3} more errors" if len(by_text) > 3 else "")
                        + (f"; {ranks_text(accepted)} accepted {'its' if len(accepted) == 1 else 'their'} command line"
                           if accepted else "") + ": every node must run the same command")
    e.alike = len(refused) == world and len(by_text) == 1
    raise raised_alike(e)


def start_refused(error: BaseException) -> None:
    """Under torchrun (several ranks), for a rank that cannot start (its command line refused
    before the process group): it meets the others at the start (:func:`_meet`), so that none
    waits for it, and raises the error every rank raises then. Without torchrun it returns."""
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if world < 2:
        return
    store, hosting = _store(rank, world, datetime.timedelta(seconds=START_WAIT_S))
    _meet(store, rank, world, error, hosting)


@contextlib.contextmanager
def setup(device: str = "cpu", backend: str | None = None, timeout_s: float = 1800) -> Iterator[Dist]:
    """Initialise (or not) the process group, yield :class:`Dist`, always tear it down.

    Backend: NCCL for CUDA, gloo for CPU, unless ``backend`` overrides it. Under torchrun the
    ranks first meet (:func:`_meet`): one that cannot start stops them all, said once.
    """
    if int(os.environ.get("RANK", -1)) == -1:
        yield Dist(device=device_for(device))
        return
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    timeout = datetime.timedelta(seconds=timeout_s)
    store, hosting = _store(rank, world, timeout)
    refused = None
    try:
        dev = device_for(device, local_rank, local_world, backend)
        backend = backend or ("nccl" if dev.startswith("cuda") else "gloo")
        if ":" not in backend and not td.is_backend_available(backend):
            raise raised_alike(ConfigError(f"--backend {backend}: this torch ({torch.__version__}) was built without "
                                           f"it; use gloo{' (or nccl on CUDA)' if td.is_nccl_available() else ''}"))
    except ConfigError as e:
        refused = e
    _meet(store, rank, world, refused, hosting)
    if dev.startswith("cuda"):
        torch.cuda.set_device(dev)
    td.init_process_group(backend=backend, store=store, rank=rank, world_size=world, timeout=timeout,
                          device_id=torch.device(dev) if dev.startswith("cuda") else None)
    try:
        yield Dist(rank, world, local_rank, local_world, dev, backend)
    finally:
        gc.collect()  # anything holding the group (kept alive by reference cycles) goes before it
        td.destroy_process_group()
