"""The training loop: corpus -> vocabulary -> SGD over streamed examples -> vectors.

>>> import w2v_dist
>>> w2v_dist.train("data/shards/", "runs/r1", model="sg", dim=100, epochs=5)  # doctest: +SKIP
"""

from __future__ import annotations

import collections
import contextlib
import functools
import glob
import io
import json
import logging
import os
import random
import signal
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Iterator

import numpy as np
import pyarrow as pa
import torch
from torch.utils.data import DataLoader

from w2v_dist import checkpoint, owner, storage
from w2v_dist.config import ConfigError, TrainConfig, alike, raised_alike
from w2v_dist.corpus.dataset import CorpusStream, Tokens, identity, logging_setup, token_stream, worker_init
from w2v_dist.corpus.plan import ranks_without_data
from w2v_dist.corpus.shards import CorpusError, Shard, scan_shards
from w2v_dist.distributed import Dist, Lockstep, ranks_text, setup, synchronized
from w2v_dist.encoding import COLUMN as ENCODED_COLUMN
from w2v_dist.encoding import check_tokenizer, encoded_vocab, read_manifest
from w2v_dist.faults import maybe_fail
from w2v_dist.kernels import resolve_kernel, wait_warm_up, warm_up_in_background
from w2v_dist.model import Word2Vec
from w2v_dist.progress import DATA_WAIT_SHOWN, DivergedError, Guard, Progress
from w2v_dist.sync import TableSync, auto_lr_scale, auto_sync_every, check_node_every
from w2v_dist.tensorboard import open_board
from w2v_dist.vocab import Counter, Vocab, VocabError

log = logging.getLogger("w2v_dist.train")

RUN_FILES = ("config.json", "plan.json", "vocab", "checkpoints", "metrics.jsonl", "tensorboard", "vectors.npy",
             "summary.json")


class RunExistsError(ValueError):
    """The output directory holds a run that would be overwritten."""


@dataclass
class LinearSchedule:
    """word2vec.c's learning rate: linear from ``alpha`` to ``min_alpha`` over all words of all epochs."""

    alpha: float
    min_alpha: float
    total_words: int

    def __call__(self, words_done: float) -> float:
        frac = min(words_done / max(self.total_words, 1), 1.0)
        return max(self.alpha - (self.alpha - self.min_alpha) * frac, self.min_alpha)


@dataclass
class Start:
    """What a run starts from: fresh, or a checkpoint of an earlier attempt."""

    shards: list[Shard]
    row_tokens: list[list[tuple[int, int]]]
    vocab_uri: str
    checkpoint: tuple[int, dict, dict] | None = None  # (step, tensors, state)
    skipped: dict = field(default_factory=dict)  # data left out before training (--on-bad-shard skip)
    encoded: bool = False  # the corpus is token ids (`w2v-dist encode`): no tokenizing, no token cache


def start_run(cfg: TrainConfig, dist: Dist) -> Start:
    """A new run, or the resumption of the one in ``--output``. Bad input and incompatible
    settings fail here, before anything is written."""
    so, out = cfg.output_options, cfg.output
    # rank 0's view, for all: ranks that saw the run directory differently would take different
    # paths (resume, or a vocabulary pass) and wait in different collectives
    finished, started, corpus, saved = dist.on_main(lambda: tuple(
        storage.exists(storage.join(out, name), so) for name in ("summary.json", "config.json", "encoded.json",
                                                                 "checkpoints")))
    if corpus:  # --overwrite or not: the run's vocab/ would replace the one its ids were encoded with
        raise RunExistsError(f"{out}: holds an encoded corpus (`w2v-dist encode`), not a run; choose another --output")
    if finished and not cfg.overwrite:
        raise RunExistsError(f"{out}: holds a finished run; pass --overwrite to replace it or choose another --output")
    if saved and not started and not cfg.overwrite:  # its checkpoints, newer by number, were resumed from later
        raise RunExistsError(f"{out}: holds checkpoints but no config.json (it was removed, or the directory is not a "
                             "whole run): they cannot be checked against this command; pass --overwrite to start "
                             "again there, or choose another --output")
    shards, report, encoded = scan_once(cfg, dist)
    if encoded:
        check_tokenizer(cfg.tokenizer, encoded, cfg.corpus)
    vocab_uri = storage.join(out, "vocab")
    if started and not cfg.overwrite:
        return replace(_resume(cfg, dist, shards, vocab_uri), encoded=encoded is not None)
    if encoded:  # counted when encoding: no vocabulary pass
        vocab, row_tokens, skipped = encoded_vocab(cfg, encoded, shards)
        log.info("%s: an encoded corpus (`w2v-dist encode`): %d words of its %d; no vocabulary pass",
                 cfg.corpus, len(vocab), encoded["vocab_size"])
    else:
        vocab, row_tokens, skipped = build_vocab(cfg, shards, dist)
    check_memory(cfg, dist, len(vocab))  # before the run is written: a refused run leaves nothing
    # (an encoded corpus's: what encoding left out, then what this scan did)
    skipped.update(bad_files=skipped.get("bad_files", 0) + len(report.get("bad_files", [])),
                   empty_files=report["empty_files"], empty_row_groups=report["empty_row_groups"])
    if dist.is_main:
        for name in RUN_FILES if started or finished or saved else ():
            storage.remove(storage.join(out, name), so, recursive=True)
        storage.makedirs(out, so)
        vocab.save(vocab_uri, so)
        plan = {"shards": [s.to_dict() for s in shards], "row_tokens": row_tokens, "skipped": skipped}
        storage.write_text(storage.join(out, "plan.json"), json.dumps(plan), so)
        storage.write_text(storage.join(out, "config.json"), cfg.to_json(), so)  # last: the run exists
    dist.barrier()
    return Start(shards, row_tokens, vocab_uri, skipped=skipped, encoded=encoded is not None)


def scan_once(cfg: TrainConfig, dist: Dist) -> tuple[list[Shard], dict, dict | None]:
    """The manifest, read by rank 0 and handed to the others: N ranks reading 10,000 footers
    each would be N x 10,000 requests to the store. A bad corpus fails on every rank alike. Also
    ``encoded.json`` when the corpus is one ``w2v-dist encode`` wrote (else None)."""

    def scan():
        report: dict = {}
        encoded = read_manifest(cfg.corpus, cfg.storage_options)
        column = ENCODED_COLUMN if encoded else cfg.text_column
        return (scan_shards(cfg.corpus, column, cfg.storage_options, cfg.on_bad_shard, report, cfg.allow_incomplete,
                            ids=encoded is not None), report, encoded)

    return dist.on_main(scan, (CorpusError, ConfigError, storage.StorageError))


def _resume(cfg: TrainConfig, dist: Dist, shards: list[Shard], vocab_uri: str) -> Start:
    so, out = cfg.output_options, cfg.output
    saved = _run_json(out, "config.json", so)
    diff = checkpoint.config_diff(saved, cfg.to_dict())
    if 0 in diff.get("replicas", ()):  # --replicas 0 and the number it chose: _train compares what each trains
        del diff["replicas"]
    if "corpus" in diff and same_place(*map(str, diff["corpus"])):
        del diff["corpus"]  # one directory, spelt another way (shards, ./shards, /data/shards): refused before

    def said(keys) -> str:
        return ", ".join(f"{k}: {diff[k][0]!r} -> {diff[k][1]!r}" for k in keys)

    if "workers" in diff:  # the data positions are per reader: --force-resume cannot help
        raise ConfigError(f"{out}: was started with --workers {diff['workers'][0]}; resume with the same (the data "
                          "positions depend on it), or --overwrite to start again")
    fixed = sorted(set(diff) & checkpoint.FIXED_AT_START)
    if fixed and cfg.force_resume:
        raise ConfigError(f"{out}: {said(fixed)} cannot change when a run resumes, not even with --force-resume: its "
                          "vocabulary and tables were made with them; use the same flags, or --overwrite to start again")
    if diff:
        if not cfg.force_resume:
            raise ConfigError(f"{out}: was started with other settings ({said(diff)}); use the same flags, "
                              "--force-resume to continue anyway, or --overwrite to start again")
        if dist.is_main:  # every rank compares the same files: said once
            log.warning("resuming with changed settings (--force-resume): %s", said(diff))
    plan = _run_json(out, "plan.json", so)
    if not same_shards(plan["shards"], shards):
        raise ConfigError(f"{cfg.corpus}: the shards differ from those the run in {out} started with "
                          "(files added, removed or rewritten); pass --overwrite to start again")
    row_tokens = [[tuple(x) for x in shard] for shard in plan["row_tokens"]]
    skipped = plan.get("skipped", {})
    found, message = None, None
    if dist.is_main:  # rank 0 picks the checkpoint (verifying it, falling back); the others load that step
        try:
            found = checkpoint.latest(out, so)
            message = found[0] if found else None
        except ValueError as e:
            message = str(e)
    message = dist.broadcast_object(message)
    if isinstance(message, str):
        raise ConfigError(message)
    if message is None:
        log.info("%s: no committed checkpoint yet; starting from the beginning", out)
        _forced(cfg, dist, diff)
        return Start(shards, row_tokens, vocab_uri, skipped=skipped)
    found = found or (message, *checkpoint.load(out, message, so))
    step, _, state = found
    if state["world_size"] != dist.world_size or state["workers"] != cfg.workers:
        raise ConfigError(f"{out}: checkpoint step-{step} was written by {state['world_size']} rank(s) with "
                          f"--workers {state['workers']}; resume with the same (the data positions depend on both)")
    total = _run_json(vocab_uri, "vocab.json", so)["total_words"]
    done = state["words_done"] >= cfg.epochs * total
    if done and state.get("config", {}).get("epochs") != cfg.epochs:  # --force-resume --epochs below what is trained
        raise ConfigError(f"--epochs {cfg.epochs}: checkpoint step-{step} of {out} has trained "
                          f"{state['words_done'] / total:.2f} epochs' words already; resume with more epochs, or "
                          "--overwrite to start again")
    _forced(cfg, dist, diff)
    if done:  # the run's last checkpoint, and its vectors or summary not written (a full disk, a kill)
        log.info("finishing from %s/checkpoints/step-%d: training was done, its vectors and summary were not written",
                 out, step)
    else:
        log.info("resuming from %s/checkpoints/step-%d (%d words done)", out, step, state["words_done"])
    return Start(shards, row_tokens, vocab_uri, found, skipped)


def _run_json(out: str, name: str, so: dict | None) -> dict:
    """One of the run's own files, read to resume it: missing or damaged, one line (a truncated
    plan.json or config.json was a JSONDecodeError traceback, a missing one '[Errno 2]')."""
    uri = storage.join(out, name)
    try:
        return json.loads(storage.read_bytes(uri, so))
    except FileNotFoundError:
        raise ConfigError(f"{uri}: missing: the run directory is not whole; pass --overwrite to start again") from None
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        raise ConfigError(f"{uri}: damaged ({e}); pass --overwrite to start again") from None


def _forced(cfg: TrainConfig, dist: Dist, diff: dict) -> None:
    """After --force-resume took changed settings: they are what the next attempt compares with."""
    if diff and dist.is_main:
        storage.write_text(storage.join(cfg.output, "config.json"), cfg.to_json(), cfg.output_options)


def same_shards(listed: list[dict], shards: list[Shard]) -> bool:
    """The shards a run started with (``plan.json``) are the ones found now: names, row counts and
    footer hashes, so a file rewritten with as many rows is not taken for the one listed (a plan
    written before footers were kept compares names and rows)."""
    return len(listed) == len(shards) and all(
        same_place(p["uri"], s.uri) and (p["num_rows"], p.get("footer") or s.footer) == (s.num_rows, s.footer)
        for p, s in zip(listed, shards))


def same_place(a: str, b: str) -> bool:
    """The same URI, or one local file or directory spelt two ways (``shards``, ``./shards``, its
    absolute path): a resume that named the corpus another way was refused as another corpus."""
    return a == b or (storage.is_local(a) and storage.is_local(b)
                      and os.path.realpath(storage.local_path(a)) == os.path.realpath(storage.local_path(b)))


def build_vocab(cfg: TrainConfig, shards, dist: Dist) -> tuple[Vocab, list[list[tuple[int, int]]], dict]:
    """Each rank counts its share of the row groups; the tables are merged (summed, pruned the same
    way), so the result equals the single-process vocabulary whenever no pruning is needed.

    Also returns ``(rows, tokens)`` of every row group, from which the data plan balances ranks
    (a row group skipped as unreadable gets no rows), and the counts of skipped data.
    """
    def count(packed: bool):
        counter = Counter(cfg.max_vocab_size)
        seen, skipped = [], {}
        for s, g, tokens in token_stream(shards, cfg.tokenizer, dist.rank, dist.world_size, cfg.storage_options,
                                         cfg.on_bad_shard, skipped):
            if tokens is not None:
                counter.add(tokens)
            seen.append((s, g, -1 if tokens is None else len(tokens)))
            maybe_fail("vocab", dist.rank, len(seen))
        table = counter.result()  # packed: for the other ranks
        # (the highest count pruning dropped while counting, 0: none)
        return _ipc(table) if packed else table, counter.tokens, seen, skipped, counter.min_reduce - 1

    if dist.world_size == 1:
        table, tokens, seen, skipped, pruned = count(packed=False)
    else:  # a shard one rank cannot read stops every rank with its error, said once
        parts = dist.on_every(lambda: count(packed=True), (CorpusError, ConfigError, storage.StorageError))
        merged = Counter(cfg.max_vocab_size)
        for blob, *_ in parts:
            merged.add_counts(pa.ipc.open_stream(blob).read_all())
        table, tokens = merged.result(), sum(p[1] for p in parts)
        pruned = max(merged.min_reduce - 1, *(p[4] for p in parts))
        seen = [x for p in parts for x in p[2]]
        skipped = sum_counts(p[3] for p in parts)
    row_tokens = [[(n, 0) for n in shard.row_groups] for shard in shards]
    for s, g, n in seen:
        row_tokens[s][g] = (shards[s].row_groups[g], n) if n >= 0 else (0, 0)
    try:
        vocab = Vocab.build(table, cfg.min_count, cfg.max_vocab, cfg.sample, raw_tokens=tokens, source=cfg.corpus)
    except VocabError:
        if pruned:
            raise VocabError(f"the vocabulary is empty: --max-vocab-size {cfg.max_vocab_size} made counting drop "
                             f"every token seen {pruned} times or fewer, and none that survived occurs "
                             f"--min-count={cfg.min_count} times; raise --max-vocab-size (it bounds the "
                             "count table's rows while counting, not the vocabulary: --max-vocab does that)") from None
        raise
    return vocab, row_tokens, skipped


def check_memory(cfg: TrainConfig, dist: Dist, vocab_size: int) -> None:
    """Refuse, in one line, tables that cannot fit, before allocating them: a --dim too large for
    memory was a traceback from the allocator (or the OOM killer) after the vocabulary pass.

    On the CPU every rank of the node holds the two tables and their initialisation (3 x V x dim
    float32), and with several ranks the sync's snapshot of both and its buffer for their changes
    (--sync-overlap: and a copy of what the rank sent); --replicas R adds R - 1 copies of both; a
    checkpoint copies the tables again, so this is a floor, not a budget. (``--replicas 0`` counts
    as one table here: it trains one where two do not fit, :func:`resolve_replicas`.)"""
    tables, replicas = vocab_size * cfg.dim * 4, cfg.replicas or 1
    need = memory_need(cfg, dist, vocab_size, replicas)
    free = [f for f in dist.all_gather_object(_available_memory() if torch.device(dist.device).type == "cpu" else None)
            if f is not None]  # every rank's: the message is the tightest node's, the same on all
    if free and need > min(free):
        several = dist.world_size > 1
        raise ConfigError(f"--dim {cfg.dim} with {vocab_size} words needs about {need / 2**30:.1f} GiB for the tables "
                          f"on {'each' if several else 'this'} node ({tables / 2**30:.1f} GiB each, "
                          f"{dist.local_world_size} rank(s)"
                          f"{f', {replicas} replicas' if replicas > 1 else ''}), but {min(free) / 2**30:.1f} "
                          f"GiB is available"
                          f"{' on the tightest' if several else ''}: lower --dim, or --max-vocab / --min-count")


def memory_need(cfg: TrainConfig, dist: Dist, vocab_size: int, replicas: int) -> int:
    """Bytes of tables a node holds (:func:`check_memory`)."""
    tables = vocab_size * cfg.dim * 4
    return (3 + 2 * (replicas - 1) + (4 + 2 * cfg.sync_overlap) * (dist.world_size > 1)) * tables \
        * dist.local_world_size


def _available_memory() -> int | None:
    """Bytes this process could still get: the kernel's MemAvailable, or the cgroup's limit left
    if that is lower (a container's or a scheduler's); None where neither can be read."""
    found = []
    try:
        with open("/proc/meminfo") as f:
            found += [int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:")]
    except OSError:
        pass
    try:
        with open("/sys/fs/cgroup/memory.max") as f, open("/sys/fs/cgroup/memory.current") as g:
            limit = f.read().strip()
            if limit != "max":
                found.append(int(limit) - int(g.read()))
    except (OSError, ValueError):
        pass
    return min(found) if found else None


def sum_counts(parts) -> dict[str, int]:
    """Skip counts (``{what: n}``) of several readers or ranks, added up."""
    total: collections.Counter = collections.Counter()
    for counts in parts:
        total.update(counts)
    return dict(total)


def _ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return sink.getvalue().to_pybytes()


@dataclass
class Batch:
    tokens: Tokens
    words: int  # this rank's in-vocabulary words in the chunk (learning-rate progress)
    epoch: int


class Feed:
    """The stream's chunks as steps (one chunk a step), and where they came from: :meth:`state_dict`
    is this rank's data position for a checkpoint (see :meth:`CorpusStream.load_state_dict`)."""

    def __init__(self, chunks, state: dict | None = None, workers: int = 1):
        self.chunks, self.workers = chunks, max(workers, 1)
        # this session's seconds the training thread waited for the reader's next chunk, the first
        # one's included (as in the training time): a run bound by its input
        self.wait_s = 0.0
        self.first_s: float | None = None  # of it, the first chunk's: the readers' start (processes, imports)
        self.end_s = 0.0  # the readers' end: the wait for the end of the data, after the last chunk
        self.after: dict[str, list[int]] = dict((state or {}).get("after", {}))
        self.next: int | None = (state or {}).get("next")  # the worker whose chunk comes next
        self.skipped: dict[str, dict] = dict((state or {}).get("skipped", {}))  # worker -> running counts

    def state_dict(self) -> dict:
        return {"after": dict(self.after), "next": self.next, "skipped": dict(self.skipped)}

    def skipped_total(self) -> dict[str, int]:
        return sum_counts(self.skipped.values())

    def resume_for_stream(self) -> dict:
        return {"after": dict(self.after), "first": self.next}

    def __iter__(self) -> Iterator[Batch]:
        chunks = iter(self.chunks)
        try:
            while True:
                t = time.perf_counter()
                chunk = next(chunks, None)
                if chunk is None:  # the readers' end, after the last chunk: no training waited for it
                    self.end_s = time.perf_counter() - t  # (it was counted as waiting: 28% of a small run)
                    return
                self.wait_s += time.perf_counter() - t
                if self.first_s is None:
                    self.first_s = self.wait_s
                self.after[str(chunk.worker)] = chunk.position
                self.next = (chunk.worker + 1) % self.workers
                if chunk.skipped:
                    self.skipped[str(chunk.worker)] = chunk.skipped
                yield Batch(chunk.tokens, chunk.tokens.words, chunk.epoch)
        finally:
            # Stop the reader processes now, also when one of them raised (a shard that turned bad
            # mid-run): the error's traceback keeps the DataLoader's iterator alive past main(),
            # and at exit Python waits for its readers, which ignore SIGTERM (worker_init), forever.
            stop = getattr(chunks, "_shutdown_workers", None)  # what the iterator's __del__ calls
            if stop is not None:
                stop()
            close = getattr(chunks, "close", None)  # the reader thread's generator
            if close is not None:
                close()


class Control:
    """When to checkpoint and whether to stop: ``--checkpoint-every``, ``--checkpoint-minutes``,
    SIGTERM/SIGINT. Rank 0's clock decides time-based saves; all ranks learn it in the per-step
    all-reduce, so they checkpoint (and stop) at the same step: the next one where the tables are
    equal on all ranks (:mod:`w2v_dist.sync`), so that checkpoints never change the result."""

    def __init__(self, cfg: TrainConfig, dist: Dist):
        self.every, self.minutes, self.dist = cfg.checkpoint_every, cfg.checkpoint_minutes, dist
        self.last = time.monotonic()
        self.signal: int | None = None
        self.epoch = 0  # the newest epoch this rank has trained in
        self.pending = self.stop = False
        self.diverged = 0  # set by the loop after a step, reported with the next
        self.until = ""  # where the checkpoint waits for, if not the next step (said when a signal comes)
        if threading.current_thread() is threading.main_thread():  # (only there can Python take signals)
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, self._on_signal)

    def _on_signal(self, signum, _frame) -> None:
        if self.signal is not None:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.signal = signum
        # torchrun passes a signal to every rank: rank 0 says it (the others with --log-all-ranks)
        (log.warning if self.dist.is_main else log.info)(
            "%s received: finishing this step, writing a checkpoint%s, then stopping", signal.Signals(signum).name,
            self.until)

    def flags(self, batch) -> list[int]:
        """(checkpoint now, stop now, this step starts a new epoch here, diverged here): summed over
        ranks at the start of each step."""
        due = self.minutes is not None and time.monotonic() - self.last >= 60 * self.minutes
        new_epoch = int(batch is not None and batch.epoch > self.epoch)
        return [int(self.dist.is_main and due), int(self.signal is not None), new_epoch, self.diverged]

    def request(self, step: int, flags: list[int]) -> None:
        """Note a checkpoint (and a stop) asked for at this step; it is written at the next step where
        the ranks' tables are equal (every step with one process)."""
        self.pending |= bool(flags[0] or flags[1] or (self.every and step % self.every == 0))
        self.stop |= bool(flags[1])

    @staticmethod
    def answered(raised: list[int]) -> list[int]:
        """The flags a rank raised since the last exchange, less the requests a checkpoint answers
        (checkpoint now, stop now): left in the checkpoint, they stopped the resumed run again."""
        return [0, 0, *raised[2:]] if raised else raised

    def saved(self) -> bool:
        """The checkpoint is written; returns whether to stop now."""
        self.last, self.pending = time.monotonic(), False
        return self.stop


def rng_states() -> dict:
    """Python, numpy and torch generator states as JSON (nothing in training draws from them: all
    draws are keyed by (seed, epoch, unit, piece); they are kept so user code that does resumes too)."""
    py = random.getstate()
    np_state = np.random.get_state()
    return {"python": [py[0], list(py[1]), py[2]],
            "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
            "torch": torch.get_rng_state().tolist()}


def set_rng_states(s: dict) -> None:
    random.setstate((s["python"][0], tuple(s["python"][1]), s["python"][2]))
    np.random.set_state((s["numpy"][0], np.array(s["numpy"][1], dtype=np.uint32), *s["numpy"][2:]))
    torch.set_rng_state(torch.tensor(s["torch"], dtype=torch.uint8))


def train(cfg: TrainConfig) -> dict:
    """Run a whole training job as described by ``cfg`` (resuming the one in ``cfg.output`` if it
    has a checkpoint); returns the summary (also in summary.json)."""
    with setup(cfg.device, cfg.backend) as dist, callers_state():
        check_ranks(cfg, dist)
        with owning(cfg, dist):
            return _train(cfg, dist)


@contextlib.contextmanager
def callers_state() -> Iterator[None]:
    """What training sets for itself and the caller (a script, a notebook) gets back when it
    returns: the SIGINT/SIGTERM handlers (a later Ctrl-C was taken for the run's) and numba's
    thread count. A handler set to ignore signals stays: that is a stopping rank's, about to exit."""
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    numba = sys.modules.get("numba")
    threads = numba.get_num_threads() if numba is not None else None
    try:
        yield
    finally:
        if threading.current_thread() is threading.main_thread():
            for sig, handler in handlers.items():
                if signal.getsignal(sig) is not signal.SIG_IGN and handler is not None:
                    signal.signal(sig, handler)
        if threads is not None:
            sys.modules["numba"].set_num_threads(threads)


# what one node may set for itself: where it caches, its cores, its credentials, its logs
PER_NODE = {"cache_dir", "token_cache_gb", "threads", "storage_options", "output_storage_options", "log_every",
            "log_all_ranks"}


def check_ranks(cfg: TrainConfig, dist: Dist) -> None:
    """Every rank must run the same command on places every rank reaches. On several nodes each
    runs its own, and a flag that differs (``--dim`` on one node, another version of w2v_dist on
    another) left the ranks' collectives of different sizes: gloo aborted with 'Connection reset by
    peer', NCCL may hang. Checked before anything else, and said once, naming the ranks and the
    settings."""
    for flag, uri in (("corpus", cfg.corpus), ("--output", cfg.output)):
        if storage.protocol(str(uri)) != "memory":
            continue
        if dist.distributed:  # the same on every rank: said once
            raise raised_alike(ConfigError(
                f"{flag} {uri}: memory:// is each process's own, and rank 0's is not rank 1's; several ranks "
                "need a place they all reach (a directory, a shared file system or an object store)"))
        if cfg.workers:  # (it failed late, as 'no vocabulary here', in a reader)
            raise ConfigError(f"{flag} {uri}: memory:// is this process's own, which its reader processes "
                              f"(--workers {cfg.workers}) cannot see; use --workers 0 (a reader thread)")
    if not dist.distributed:
        return
    import w2v_dist

    theirs = dist.all_gather_object(cfg.to_dict() | {"w2v_dist version": w2v_dist.__version__})
    odd = {r: d for r, t in enumerate(theirs) if (d := checkpoint.config_diff(theirs[0], t, ignore=PER_NODE))}
    if odd:
        what = "; ".join(f"rank {r}: " + ", ".join(f"{k} {b!r} (rank 0: {a!r})" for k, (a, b) in d.items())
                         for r, d in list(odd.items())[:4])
        more = f" and {len(odd) - 4} more ranks" if len(odd) > 4 else ""
        raise raised_alike(ConfigError(
            f"the ranks were started with different settings ({what}{more}); every rank must run the same "
            "command: on several nodes, give each node's torchrun the same flags and the same w2v_dist"))


@contextlib.contextmanager
def owning(cfg: TrainConfig, dist: Dist) -> Iterator[None]:
    """Rank 0 holds the run directory's lock (:mod:`w2v_dist.owner`) from before the first write
    until the run stops; every rank learns whether it got it."""
    fs, path = storage.url_to_fs(cfg.output, cfg.output_options)
    with alike(ConfigError):
        if fs.isfile(path):  # found now, not after the vocabulary pass, when the first file is written
            raise ConfigError(f"{cfg.output}: is a file; --output must name a run directory (a new path, or an "
                              "earlier run's)")
    lock, error = None, None
    if dist.is_main:
        try:
            lock = owner.acquire(cfg.output, cfg.output_options)
            if storage.is_local(cfg.output):  # half-written files of a process killed inside a write
                for stale in glob.glob(os.path.join(storage.local_path(cfg.output), ".tmp-*")):
                    with contextlib.suppress(OSError):
                        os.unlink(stale)
        except OSError as e:  # a read-only filesystem, no permission, a path under /proc ...
            error = ConfigError(f"{cfg.output}: cannot write the run directory ({e.strerror or e}); --output must "
                                "name a place this process may write")
        except Exception as e:  # the other ranks must not wait for rank 0 in the next collective
            error = e
    message = dist.broadcast_object(None if error is None else str(error))
    with alike(Exception):  # rank 0's, raised by every rank: said once
        if error is not None:
            raise error
        if message is not None:
            raise owner.RunLockedError(message)
    if lock is not None:
        _OWNED[cfg.output] = lock
    try:
        yield
    finally:
        if lock is not None:
            _OWNED.pop(cfg.output, None)
            lock.release()


# the lock rank 0 holds on each run it trains (owning): its writes look first that it still holds it
_OWNED: dict[str, owner.Lock] = {}


def still_ours(cfg: TrainConfig) -> None:
    """Before rank 0 writes into the run directory (a checkpoint, the vectors): the directory is
    still the one it locked. Removed or moved while training, it was made anew by the next write
    (until 2026-11-28): the run ended "done" into a directory holding its last checkpoint,
    vectors and summary but no vocabulary, which nothing could read, and no lock, so a second
    run could start in it."""
    lock = _OWNED.get(cfg.output)
    if lock is not None and not lock.held():
        raise owner.RunLockedError(
            f"{cfg.output}: the run directory was removed or moved while this run trained (its lock {lock.uri} is "
            "gone or another's): stopped without writing there. If it was moved, run the same command with --output "
            "at its new place to resume from its checkpoints")


def _train(cfg: TrainConfig, dist: Dist) -> dict:
    so, t0 = cfg.output_options, time.perf_counter()
    wanted = resolve_replicas(cfg, dist)  # the settings' and the cores' choice; memory may cut it (below)
    warm_up_in_background(cfg.kernel, torch.device(dist.device).type, replicas=wanted > 1)  # beside the vocabulary pass
    with alike(ConfigError, CorpusError, RunExistsError, VocabError):  # checks of what all ranks see alike
        check_node_every(cfg.sync_node_every, cfg.sync_every, dist.world_size, cfg.sync_combine)  # before the run dir
        start = start_run(cfg, dist)
    vocab = _load_vocab(start.vocab_uri, cfg, dist)
    log.info("vocabulary: %d words, %d words per epoch, %d shards (%.1fs)", len(vocab), vocab.total_words,
             len(start.shards), time.perf_counter() - t0)
    if dist.is_main and dist.world_size > 1:
        _warn_idle_ranks(start.row_tokens, cfg, dist)
    kernel = resolve_kernel(cfg.kernel, torch.device(dist.device).type, cfg.nondeterministic)
    with alike(ConfigError):
        if cfg.replicas > 1 and dist.world_size > 1:
            raise ConfigError(f"--replicas {cfg.replicas} copies the tables inside one process; under torchrun run "
                              "more ranks instead (--nproc-per-node), which sync as the replicas would")
    free = _available_memory()
    replicas = resolve_replicas(cfg, dist, len(vocab), free)
    if replicas < wanted:  # the default's two replicas do not fit
        log.info("--replicas 0: one table: two replicas' tables need about %.1f GiB, %.1f GiB is available",
                 memory_need(cfg, dist, len(vocab), 2) / 2**30, free / 2**30)
    # --kernel cuda: warps (0: one per multiprocessor); --replicas: one thread each; else CPU threads
    threads = replicas if replicas > 1 else cfg.threads or (
        0 if kernel == "cuda" else default_threads(dist.local_world_size))
    model = Word2Vec(vocab, cfg.dim, cfg.model, cfg.seed, dist.device, kernel, window=cfg.window,
                     negative=cfg.negative, threads=threads, slice_words=cfg.slice_words,
                     max_sentence=cfg.tokenizer.max_sentence_length, share_negatives=cfg.share_negatives,
                     nondeterministic=cfg.nondeterministic, batch_pairs=cfg.batch_pairs, replicas=replicas,
                     average_every=cfg.sync_every or auto_sync_every(2))
    # --replicas: each replica trains at this x the rate (the ranks' mean multiplier: at most 0.2 per
    # update, never below the rate asked for)
    replica_scale = auto_lr_scale(replicas, cfg.alpha)
    if replicas > 1:
        log.info("kernel: %d replicas of the tables%s, one thread each, at %.4g x the rate, averaged every %d steps",
                 replicas, "" if cfg.replicas else f" (--replicas 0: {_cores()} cores)", replica_scale,
                 model.average_every)
        if replica_scale < replicas and dist.is_main:
            log.warning("--replicas %d at --alpha %g: each replica trains at %g x the rate (at most 0.2 per update), "
                        "and their average moves a row one replica trained %g of the way one table would; "
                        "--replicas 1 trains one table at the rate", replicas, cfg.alpha, replica_scale,
                        replica_scale / replicas)
    elif kernel == "cuda":
        threads = model.fused.warps
        if dist.is_main:
            log.info("kernel: fused CUDA, %d warp%s%s", threads, " (repeatable)" if threads == 1 else
                     "s racing on shared rows (--nondeterministic: not repeatable)",
                     f"; chunks of {cfg.batch_words:,} words (--batch-words 100000 trained 1.7x faster on an H200)"
                     if cfg.batch_words < 100_000 else "")
    elif dist.is_main and kernel == "torch" and torch.device(dist.device).type == "cuda":  # once, not per rank
        log.warning("--device %s trains with the torch reference kernel (mini-batches of --batch-pairs %d), "
                    "repeatable and slow: on an H200 below one CPU core's speed. %s (docs/training.md, \"Kernels\")",
                    dist.device, cfg.batch_pairs,
                    "The fused CUDA kernel needs numba-cuda, which numba cannot find here (pip install numba-cuda)"
                    if cfg.nondeterministic else "Add --nondeterministic for the fused CUDA kernel, whose warps race")
    elif model.fused is not None:
        log.info("kernel: %d thread%s, %s", threads, "" if threads == 1 else "s",
                 "racing (--nondeterministic)" if cfg.nondeterministic and threads > 1
                 else f"slices of {model.fused.slice_words} words" + (" merged every step" if threads > 1 else ""))
    sync = TableSync(model.tables(), dist, cfg.sync_every, cfg.sync_rows, cfg.sync_combine, exact=cfg.sync == "step",
                     lr_scale=cfg.sync_lr_scale, alpha=cfg.alpha, overlap=cfg.sync_overlap,
                     node_every=cfg.sync_node_every, dtype=cfg.sync_dtype)
    if dist.is_main and (cfg.checkpoint_every or cfg.checkpoint_minutes) and (dist.world_size > 1 or replicas > 1):
        log.info("checkpoints: each waits for the next %s (every %d steps here, and at each epoch's start), where "
                 "the %s tables are equal", *(("sync of every row", sync.full_every(), "ranks'") if dist.world_size > 1
                                              else ("average of the replicas", model.average_every, "replicas'")))
    if dist.is_main and cfg.sync_node_every and dist.world_size > 1:
        if sync.node_every:
            sizes = dist.node_sizes()
            log.info("syncs: within each node%s every %d steps, across all %d ranks every %d",
                     f" of several ranks (ranks per node: {', '.join(map(str, sizes))})" if min(sizes) == 1 else "",
                     sync.node_every, dist.world_size, sync.every)
        else:
            log.info("--sync-node-every %d does nothing here: one rank per node; all %d ranks sync every %d steps",
                     cfg.sync_node_every, dist.world_size, sync.every)
    layout = {"replicas": replicas, "threads": threads}  # how the kernel trains: it decides the bits
    state = {"step": 0, "words_done": 0, "epoch": 0, "ranks": [{}] * dist.world_size, "metrics": []}
    if start.checkpoint:
        _, tensors, state = start.checkpoint
        same_layout(cfg, dist, start.checkpoint, layout)
        if state["vocab_fingerprint"] != vocab.meta["fingerprint"]:
            raise ConfigError(f"{cfg.output}: the checkpoint belongs to another vocabulary; pass --overwrite")
        with torch.no_grad():
            for name, table in model.tables().items():
                table.copy_(tensors[name])
        model.tables_set()
        sync.load_state_dict(state.get("sync", {}))
        set_rng_states(state["ranks"][dist.rank]["rng"])
    mine = state["ranks"][dist.rank]
    stream = CorpusStream(start.shards, start.vocab_uri, cfg.tokenizer, seed=cfg.seed, epochs=cfg.epochs,
                          batch_words=cfg.batch_words, rank=dist.rank, world_size=dist.world_size,
                          storage_options=cfg.storage_options, vocab_storage_options=so, cache_dir=cfg.cache_dir,
                          row_tokens=start.row_tokens, on_bad=cfg.on_bad_shard,
                          token_cache_bytes=0 if start.encoded else cfg.token_cache_gb * 2**30,
                          prepare_threads=max(1, _cores() // max(dist.local_world_size, 1)
                                              - (threads if kernel == "numba" else 1)))
    feed = Feed(None, mine.get("feed"), cfg.workers)
    stream.load_state_dict({"resume": feed.resume_for_stream()})
    wait_warm_up()  # no parallel region of the warm-up's beside the first step's
    feed.chunks = reader(stream, cfg.workers, model.draw)
    schedule = LinearSchedule(cfg.alpha, cfg.min_alpha, cfg.epochs * vocab.total_words)
    # the ranks learn each other's words every sync, and at least EXCHANGES_PER_RUN times a run: the
    # rate holds between exchanges, and a small corpus's whole run inside one interval trained at the
    # starting rate throughout (2 ranks on 150k words ended at 0.0241, one process at 0.0008); one rank
    # under torchrun has no one to wait for, and its rate moves every step, as one process's does
    run_steps = schedule.total_words // (dist.world_size * cfg.batch_words)
    lock = Lockstep(max(1, min(sync.every, run_steps // EXCHANGES_PER_RUN)) if dist.world_size > 1 else 1)
    lock.load_state_dict(mine.get("lockstep", {}))
    # rank 0's TensorBoard scalars; a resumed run's hide what the attempt before logged past its checkpoint
    board = open_board(cfg.output, so, purge_step=state["words_done"] + 1) if dist.is_main else None
    # the others wait here for rank 0's writer (its imports take 0.4-0.5 s), before their training
    # clocks start: in their first exchange it counted as waiting for the slowest rank
    dist.barrier()
    def extras() -> dict:  # for each metrics line: rank 0's wait for data, and the ranks' syncs and words
        ranks = {"sync_bytes": sync.bytes, "rank_words": lock.rank_words} if dist.world_size > 1 else {}
        return {"reader_wait_s": feed.wait_s, **ranks}

    # rank 0 writes metrics.jsonl (and TensorBoard); every rank whose lines are shown (--log-all-ranks) logs its own
    progress = Progress(schedule.total_words, storage.join(cfg.output, "metrics.jsonl") if dist.is_main else None,
                        cfg.log_every, enabled=dist.is_main or log.isEnabledFor(logging.INFO), storage_options=so,
                        words_done=state["words_done"],
                        records=state["metrics"], resumed_from=state["words_done"] if start.checkpoint else None,
                        board=board, extras=extras, tail=state.get("loss_tail"), epochs=cfg.epochs)
    scale = sync.lr_scale * replica_scale  # (1 for one table)
    guard = Guard(cfg.negative, cfg.alpha, lr_scale=scale)
    guard.checkpointed = bool(start.checkpoint)
    control = Control(cfg, dist)
    if dist.world_size > 1:  # (with replicas SIGTERM at step 50 stopped at 64 under "finishing this step")
        control.until = f" at the next sync of every row (at most {sync.full_every()} steps on)"
    elif replicas > 1:
        control.until = f" at the next average of the replicas (at most {model.average_every} steps on)"
    words_done, step, lr = state["words_done"], state["step"], cfg.alpha
    control.epoch = epoch = mine.get("epoch", 0)
    with_data, session_examples = mine.get("with_data", 0), 0
    for batch, words, flags in synchronized(feed, dist, lambda b: b.words, control.flags, lock, step):
        stop_if_diverged(flags[3], guard, control, dist, step, epoch)
        with_data += batch is not None
        lr, lr_next = schedule(words_done), schedule(words_done + words)
        loss, examples = (model.train_chunk(batch.tokens, lr * scale, lr_next * scale)
                          if batch is not None else (0.0, 0))
        if maybe_fail("loss", dist.rank, step):  # a test's diverged rank
            loss = float("nan")
        control.diverged = guard.update(loss, examples)
        words_done, step, session_examples = words_done + words, step + 1, session_examples + examples
        control.epoch = epoch = max(epoch, batch.epoch if batch is not None else epoch)
        # an epoch began on some rank: every row is synced after this step, a point to checkpoint at
        synced = sync.after_step(step, full=bool(flags[2]))
        synced = model.after_step(step, full=bool(flags[2])) and synced  # --replicas agree at their averages
        progress.update(words, examples, loss, lr, step, epoch)
        maybe_fail("step", dist.rank, step)
        control.request(step, flags)
        if control.pending and synced:  # several ranks: at a full sync, where the tables are one
            # never checkpoint a diverged table
            stop_if_diverged(dist.all_reduce_sum([control.diverged])[0], guard, control, dist, step, epoch)
            lock.flags = control.answered(lock.flags)
            save_checkpoint(cfg, dist, model, vocab, step, words_done, epoch, feed, with_data, progress, sync, lock,
                            layout, then_stop=control.stop)
            guard.checkpointed = True
            if control.saved():
                progress.end()
                return _interrupted(cfg, dist, control, step)
    stop_if_diverged(dist.all_reduce_sum([control.diverged])[0], guard, control, dist, step, epoch)
    model.average()
    sync.full()
    final = progress.close(lr, step, epoch)
    log.log(logging.INFO if dist.distributed else logging.DEBUG, "rank done: steps=%d with_data=%d", step, with_data)
    save_checkpoint(cfg, dist, model, vocab, step, words_done, epoch, feed, with_data, progress, sync, lock, layout)
    # what the vocabulary pass left out (the corpus read once), and what reading for training hit
    # on top of it, counted each time it was met (a file that vanished mid-run, say)
    while_training = sum_counts(dist.all_gather_object(feed.skipped_total()))
    session_examples = int(dist.all_reduce_sum([session_examples])[0])  # every rank's
    if dist.is_main and session_examples == 0 and final["session_words"] > 0:
        log.warning("trained no examples in %d words: no row has two in-vocabulary words within --window %d of "
                    "each other after subsampling (one word per row?), so the vectors are their random start; put "
                    "sentences or paragraphs in the rows (w2v-dist prepare makes a row of each line)",
                    final["session_words"], cfg.window)
    if dist.is_main and (any(start.skipped.values()) or any(while_training.values())):  # every rank's, once
        log.warning("skipped data (--on-bad-shard %s): %s; while training: %s", cfg.on_bad_shard, start.skipped,
                    while_training)
    summary = {"words": words_done, "steps": step, "epochs": cfg.epochs, "vocab_size": len(vocab),
               "skipped": start.skipped, "skipped_while_training": while_training,
               "world_size": dist.world_size, "threads": threads, "replicas": replicas,
               "slice_words": model.fused.slice_words if model.fused is not None else None,
               "sync_bytes_per_word": sync.bytes / max(words_done, 1),
               "node_sync_bytes_per_word": sync.node_bytes / max(words_done, 1), "dim": cfg.dim, "model": cfg.model,
               "final_loss": final["final_loss"], "words_this_session": final["session_words"],
               "examples_this_session": session_examples,
               "elapsed_s": final["elapsed_s"], "words_per_s": final["mean_words_per_s"]}
    summary.update(time_waiting_for_data(feed, dist, final["elapsed_s"], cfg.workers))
    if dist.world_size > 1:
        summary.update(time_in_collectives(sync, lock, dist, final["elapsed_s"]))
    if dist.is_main:
        still_ours(cfg)
        buf = io.BytesIO()
        np.save(buf, model.vectors())
        storage.write_bytes(storage.join(cfg.output, "vectors.npy"), buf.getvalue(), so)
        storage.write_text(storage.join(cfg.output, "summary.json"), json.dumps(summary, indent=2), so)
        if final["session_words"] == words_done:
            log.info("done: %d words in %.1fs (%.0f words/s); vectors in %s", words_done, final["elapsed_s"],
                     final["mean_words_per_s"], storage.join(cfg.output, "vectors.npy"))
        elif final["session_words"] == 0:  # finished from the last checkpoint: nothing left to train
            log.info("done: %d words, all trained before; vectors in %s", words_done,
                     storage.join(cfg.output, "vectors.npy"))
        else:  # resumed: the rate is of this session's words over this session's time
            log.info("done: %d words, %d of them in this session: %.1fs, %.0f words/s; vectors in %s", words_done,
                     final["session_words"], final["elapsed_s"], final["mean_words_per_s"],
                     storage.join(cfg.output, "vectors.npy"))
    dist.barrier()
    return summary


# the fewest exchanges of words and flags in a run of several ranks (below --sync-every's interval on a
# small run: 2 ranks on gcide, 5 epochs, exchange every 64 steps, 18 times)
EXCHANGES_PER_RUN = 16


# a rank that waited DATA_WAIT_SHOWN of its training time for data (the share a progress line
# says), and this many seconds, is told so at the end (a small run's reader, tokenizing as it goes,
# is often behind a kernel that trains for a second)
INPUT_BOUND_S = 1.0


def time_waiting_for_data(feed: Feed, dist: Dist, elapsed_s: float, workers: int) -> dict:
    """Each rank's seconds waiting for its reader's next chunk (reading, tokenizing, drawing the
    examples), for ``summary.json``: ``reader_wait_s``, this rank's (rank 0's in the file), and under
    torchrun ``rank_reader_wait_s``. Where a rank waited ``DATA_WAIT_SHOWN`` of its training time and
    ``INPUT_BOUND_S`` or more, rank 0 says so in one line with what speeds the reader up: the run is
    bound by its input, and a faster kernel or more threads would not make it faster."""
    first = feed.first_s or 0.0
    waits, firsts, elapsed = zip(*dist.all_gather_object((round(feed.wait_s, 3), first, max(elapsed_s, 1e-9))))
    share = [w / t for w, t in zip(waits, elapsed)]
    if any(x >= DATA_WAIT_SHOWN and w >= INPUT_BOUND_S for x, w in zip(share, waits)) and dist.is_main:
        who = (f"the training waited for data {100 * share[0]:.0f}% of its time ({waits[0]:.1f} s)"
               if len(share) == 1 else f"the ranks' training waited for data {100 * min(share):.0f}-"
               f"{100 * max(share):.0f}% of its time ({min(waits):.1f}-{max(waits):.1f} s)")
        if 2 * max(firsts) >= max(waits):  # mostly for the first chunk: the readers starting, which more would slow
            log.info("%s, %.1f s of it for the first chunk: the reader's start (%s), which a run pays once; "
                     "docs/training.md, \"Waiting for data\"", who, max(firsts),
                     f"--workers {workers}: {workers} process{'es' * (workers > 1)}, each importing torch and "
                     "opening its shards; --workers 0 reads in a thread" if workers else
                     "opening the shards, and the first chunk's tokens")
        else:
            log.info("%s: its reader (%s) fell behind; %s, and a corpus written by "
                     "`w2v-dist encode` needs no tokenizing (docs/training.md, \"Waiting for data\")", who,
                     f"--workers {workers}: {workers} process{'es' * (workers > 1)}, reading and tokenizing"
                     if workers else "--workers 0: one thread, reading, tokenizing and drawing each chunk's examples",
                     "more --workers read in more processes" if workers else "--workers N reads in N processes")
    out = {"reader_wait_s": round(feed.wait_s, 3), "reader_first_wait_s": round(first, 3),
           "reader_end_s": round(feed.end_s, 3)}
    return out | ({"rank_reader_wait_s": list(waits)} if dist.world_size > 1 else {})


def time_in_collectives(sync: TableSync, lock: Lockstep, dist: Dist, elapsed_s: float) -> dict:
    """Each rank's seconds in the table syncs and the exchanges, and of them its waiting for the
    slowest rank, for ``summary.json``; rank 0 says it in one line. The last rank to reach a
    collective waits for nobody: its time there, the shortest, is the collective's own; what
    another rank spent beyond it, it spent waiting for the last (the ranks make the same
    collectives in the same order). Each rank's shares are of its own training time (``elapsed_s``,
    from its own loop's start; the ranks start theirs together, after rank 0 opened its TensorBoard
    writer: against rank 0's time, when the others started before it, a short run's shares went
    past 100%)."""
    mine = torch.tensor([*sync.durations, *lock.durations], dtype=torch.float64)
    sync_s, exchange_s, counts, elapsed = zip(*dist.all_gather_object(
        (round(sum(sync.durations), 3), round(sum(lock.durations), 3), len(mine), max(elapsed_s, 1e-9))))
    out = {"rank_sync_s": list(sync_s), "rank_exchange_s": list(exchange_s),
           "rank_elapsed_s": [round(t, 3) for t in elapsed]}
    if len(set(counts)) > 1:  # not the same collectives: no rank's time is another's to compare
        return out
    shortest = dist.min_over_ranks(mine)
    own_s = float(shortest.sum())
    wait_s = dist.all_gather_object(float((mine - shortest).sum()))
    share = [(a + b) / t for a, b, t in zip(sync_s, exchange_s, elapsed)]
    waiting = [w / t for w, t in zip(wait_s, elapsed)]
    log.log(logging.INFO if dist.is_main else logging.DEBUG,
            "ranks spent %.0f-%.0f%% of the training time in collectives: %.0f-%.0f%% waiting for the slowest rank, "
            "%.0f%% in the collectives themselves (table syncs %.1f-%.1f s, exchanges of words and flags %.1f-%.1f s); "
            "docs/distributed.md says what moves each", 100 * min(share), 100 * max(share), 100 * min(waiting),
            100 * max(waiting), 100 * own_s / max(elapsed), min(sync_s), max(sync_s), min(exchange_s), max(exchange_s))
    return out | {"rank_wait_s": [round(w, 3) for w in wait_s], "collectives_own_s": round(own_s, 3)}


def stop_if_diverged(ranks: int, guard: Guard, control: Control, dist: Dist, step: int, epoch: int) -> None:
    """``ranks`` ranks' guards fired (the same count on every rank, from a collective): every rank
    stops with one message naming them and their losses, said once (by rank 0)."""
    if ranks:
        losses = dist.all_gather_object(guard.worst if control.diverged else None)
        raise raised_alike(DivergedError(guard.message(step, epoch, losses)))


def _warn_idle_ranks(row_tokens, cfg: TrainConfig, dist: Dist) -> None:
    """Rank 0 says which ranks get no data (otherwise seen only with --log-all-ranks)."""
    workers = max(cfg.workers, 1)
    idle, units = ranks_without_data(row_tokens, dist.world_size, workers, cfg.seed)
    if idle:
        readers = f" x {workers} readers (--workers)" if workers > 1 else ""
        log.warning("rank%s %s get%s no data: the corpus splits into %d piece%s of work for %d ranks%s (a row is "
                    "never split between readers); they only keep step with the others. Run fewer ranks%s, or put "
                    "the text in more rows (a line or a paragraph a row)", "s" if len(idle) > 1 else "",
                    ", ".join(map(str, idle)), "" if len(idle) > 1 else "s", units, "" if units == 1 else "s",
                    dist.world_size, readers, " or readers" if workers > 1 else "")


def resolve_replicas(cfg: TrainConfig, dist: Dist, vocab_size: int | None = None, free: int | None = None) -> int:
    """``--replicas`` (0: two where they measured faster than the kernel's threads, else one table;
    given the vocabulary's size and the bytes ``free``, one table where two replicas' copies would
    not fit: the default never refuses a run that one table can train).

    Two replicas on one process's CPU with 2 to 4 cores, when nothing asked for threads
    (``--threads 0``, deterministic): on 2 cores they trained skip-gram 1.45-1.6x and CBOW 1.0-1.4x
    one table's speed, at least as well against gensim (their doubled rate; docs/training.md,
    "Replicas instead of overlays"), where 2 deterministic threads do 2.0-2.7x one thread's work.
    From 5 cores on the threads are kept: 4 and more threads' work grows more slowly than their
    number (docs/training.md, "What several deterministic threads cost"); the crossing point was
    not measured on more than 2 cores. Under torchrun the ranks are the replicas. One table where
    ``--alpha`` is above 0.1: the replicas would train at less than twice the rate (the ranks' cap
    of 0.2 per update), and their average would move a row only one replica trained less far than
    one table moves it."""
    if cfg.replicas:
        return cfg.replicas
    device = torch.device(dist.device).type
    if (cfg.threads or cfg.nondeterministic or dist.world_size > 1
            or resolve_kernel(cfg.kernel, device, cfg.nondeterministic) != "numba"):
        return 1
    if not 2 <= _cores() // max(dist.local_world_size, 1) <= 4:
        return 1
    if auto_lr_scale(2, cfg.alpha) < 2:  # --alpha above 0.1: a replica at 2 x it would pass 0.2 per update,
        return 1  # and the average of two at less moves a row one replica trained less far than one table
    if vocab_size is not None and free is not None and memory_need(cfg, dist, vocab_size, 2) > free:
        return 1
    return 2


def default_threads(ranks_on_node: int) -> int:
    """Kernel threads when --threads is 0: this rank's share of the node's cores, less one for its
    reader and Python; but never 2. On 2 cores one thread trained faster than two (the second
    thread's marks and merges cost more than it gains when the reader needs the core too:
    docs/benchmarks.md), and wherever they run, 2 deterministic threads do 2.7 (CBOW) and 2.0
    (skip-gram) times one thread's work (docs/training.md, "How the merge's cost grows with the
    threads"): on 2 free cores at best 0.74x and 1.0x one thread, so 3 cores train with 1."""
    threads = max(1, _cores() // max(ranks_on_node, 1) - 1)
    return 1 if threads == 2 else threads


def _cores() -> int:
    """The cores this process may run on (a container's or a scheduler's limit, not the host's)."""
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def reader(stream: CorpusStream, workers: int, draw: Callable[[Tokens], None] | None = None):
    """The chunks of ``stream``: read by ``workers`` DataLoader processes, or with ``--workers 0`` by
    one thread of this process, a few chunks ahead (pyarrow and the kernel release the GIL, so
    reading and training overlap without another process); that thread also makes each chunk's
    random draws (``draw``: :meth:`Word2Vec.draw`), so that the training thread only computes.
    (With DataLoader processes the training thread draws.)"""
    if workers == 0:
        def drawn(chunks: Iterator) -> Iterator:
            for chunk in chunks:
                if draw is not None:
                    draw(chunk.tokens)
                yield chunk

        return prefetch(drawn(iter(stream)), depth=4)
    return DataLoader(stream, batch_size=None, num_workers=workers, collate_fn=identity,
                      worker_init_fn=functools.partial(worker_init, log=logging_setup()), prefetch_factor=4,
                      multiprocessing_context="spawn")


def prefetch(it: Iterator, depth: int, join_s: float = 300) -> Iterator:
    """Iterate ``it`` in a background thread, at most ``depth`` items ahead; its exceptions are
    raised here. When the consumer stops early (an error elsewhere), the thread's read in progress
    is waited for, up to ``join_s``: a process that exits while pyarrow's I/O threads are still
    inside a read of an object store aborts in the interpreter's shutdown (SIGABRT, not the exit
    code of the error); the store's client bounds that read with its retries (docs/storage.md)."""
    import queue
    import threading

    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run():
        try:
            for item in it:
                if not put(item):
                    return
        except BaseException as e:  # handed to the consumer
            put(e)
            return
        put(done)

    thread = threading.Thread(target=run, name="w2v_dist-reader", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(join_s)


def save_checkpoint(cfg, dist, model, vocab, step, words_done, epoch, feed, with_data, progress, sync,
                    lock: Lockstep, layout: dict, then_stop: bool = False) -> None:
    """Every rank's position goes to rank 0, which writes; everyone waits for the commit. The
    tables are equal on all ranks (a full sync ran just before). ``then_stop``: a signal's
    checkpoint, after which every rank exits."""
    ranks = dist.all_gather_object({"feed": feed.state_dict(), "with_data": with_data, "epoch": epoch,
                                    "rng": rng_states(), "lockstep": lock.state_dict(), "layout": layout})
    if dist.is_main:
        still_ours(cfg)
        state = {"step": step, "words_done": words_done, "epoch": epoch, "world_size": dist.world_size,
                 "workers": cfg.workers, "ranks": ranks, "config": cfg.to_dict(),
                 "vocab_fingerprint": vocab.meta["fingerprint"], "sync": sync.state_dict(), "layout": layout,
                 "metrics": progress.records, "loss_tail": [list(t) for t in progress.tail]}
        checkpoint.save(cfg.output, step, model.tables(), state, keep=cfg.keep_checkpoints,
                        storage_options=cfg.output_options)
        if then_stop and dist.world_size > 1:
            # the other ranks exit after the barrier, and torchrun stops the ranks left when one
            # exits: rank 0 lets nothing cut short its last line and its release of the run
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, signal.SIG_IGN)
    dist.barrier()


def same_layout(cfg: TrainConfig, dist: Dist, found: tuple[int, dict, dict], layout: dict) -> None:
    """The replicas and kernel threads this attempt resolved against the checkpoint's (--replicas 0
    and --threads 0 resolve by the machine's cores; --threads is a speed setting and a node's own),
    each rank's against its own: another number of replicas is refused unless forced, other threads
    are said; the run goes on, off the bits an uninterrupted run would give. Said once, by rank 0,
    naming the ranks (each rank compared its own, and a node's other cores went unsaid)."""
    step, _, state = found
    ranks = state.get("ranks") or []
    # (a checkpoint from before each rank's was kept has rank 0's; one from before that none: not compared)
    was = (ranks[dist.rank].get("layout") if dist.rank < len(ranks) else None) or state.get("layout")
    odd = {r: d for r, d in enumerate(dist.all_gather_object(
        None if not was or was == layout else (was, layout, cfg.replicas, cfg.threads))) if d}
    if not odd:
        return
    where = lambda rs: f" on {ranks_text(list(rs))}" if dist.world_size > 1 else ""  # noqa: E731
    replicas = {r: d for r, d in odd.items() if d[0]["replicas"] != d[1]["replicas"]}
    if replicas and not cfg.force_resume:
        was, now, flag_replicas, flag_threads = next(iter(replicas.values()))
        raise raised_alike(ConfigError(
            f"{cfg.output}: checkpoint step-{step} trained {was['replicas']} replica(s) of the tables{where(replicas)}, "
            f"this command {now['replicas']} (--replicas {flag_replicas}, --threads {flag_threads}); resume with "
            f"--replicas {was['replicas']}, or --force-resume to go on with these"))
    if dist.is_main:
        was, now, _, _ = next(iter(odd.values()))
        log.warning("resuming with %d replica(s) and %d kernel thread(s)%s where checkpoint step-%d trained %d and %d: "
                    "the run goes on, its vectors no longer bitwise those of an uninterrupted run", now["replicas"],
                    now["threads"], where(odd), step, was["replicas"], was["threads"])


def _interrupted(cfg: TrainConfig, dist: Dist, control: Control, step: int) -> dict:
    name = signal.Signals(control.signal).name if control.signal else "a signal on another rank"
    (log.warning if dist.is_main else log.info)(
        "stopped by %s at step %d; checkpoint written. Run the same command to resume.", name, step)
    return {"interrupted": True, "signal": control.signal or signal.SIGTERM, "steps": step}


def _load_vocab(vocab_uri: str, cfg: TrainConfig, dist: Dist) -> Vocab:
    """Local rank 0 first: one node-local copy of a remote vocabulary, shared by the node's ranks.
    A rank that cannot find what rank 0 wrote stops every rank, said once: on several nodes the
    run directory must be one every node reaches."""
    loaded: list[Vocab] = []

    def load(now: bool) -> None:
        if not now:
            return
        try:
            loaded.append(Vocab.load(vocab_uri, cfg.output_options, cfg.cache_dir))
        except VocabError as e:
            if dist.is_main:
                raise
            raise VocabError(f"{e} on rank {dist.rank}, where rank 0 wrote it: this rank does not see rank 0's "
                             "--output; on several nodes it must be a place every node reaches (a shared file "
                             "system or an object store)") from e

    dist.on_every(lambda: load(dist.is_local_main), errors=(VocabError,))
    dist.on_every(lambda: load(not loaded), errors=(VocabError,))
    return loaded[0]
