"""The training loop: corpus -> vocabulary -> SGD over streamed examples -> vectors.

>>> import w2v_dist
>>> w2v_dist.train("data/shards/", "runs/r1", model="sg", dim=100, epochs=5)  # doctest: +SKIP
"""

from __future__ import annotations

import io
import json
import logging
import os
import time
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import pyarrow as pa
import torch
from torch.utils.data import DataLoader

from w2v_dist import checkpoint, storage
from w2v_dist.config import ConfigError, TrainConfig
from w2v_dist.corpus.dataset import CorpusStream, identity, token_stream, worker_init
from w2v_dist.corpus.shards import scan_shards
from w2v_dist.distributed import Dist, setup, synchronized
from w2v_dist.model import Word2Vec
from w2v_dist.pairs import Examples
from w2v_dist.progress import Progress
from w2v_dist.vocab import Counter, Vocab

log = logging.getLogger("w2v_dist.train")

RUN_FILES = ("config.json", "vocab", "checkpoints", "metrics.jsonl", "vectors.npy", "summary.json")


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


def check_run_dir(cfg: TrainConfig) -> bool:
    """Refuse to overwrite a run unless ``--overwrite``; returns whether there is one to clear."""
    so = cfg.storage_options
    done = storage.exists(storage.join(cfg.output, "summary.json"), so)
    if done or storage.exists(storage.join(cfg.output, "config.json"), so):
        if not cfg.overwrite:
            raise RunExistsError(
                f"{cfg.output}: holds a {'finished' if done else 'started'} run; pass --overwrite to replace it "
                "or choose another --output")
        return True
    return False


def clear_run_dir(cfg: TrainConfig) -> None:
    """Remove only what a run writes: other files in the directory are not ours to delete."""
    for name in RUN_FILES:
        storage.remove(storage.join(cfg.output, name), cfg.storage_options, recursive=True)


def build_vocab(cfg: TrainConfig, shards, dist: Dist) -> tuple[Vocab, list[list[tuple[int, int]]]]:
    """Each rank counts its share of the row groups; the tables are merged (summed, pruned the same
    way), so the result equals the single-process vocabulary whenever no pruning is needed.

    Also returns ``(rows, tokens)`` of every row group, from which the data plan balances ranks.
    """
    counter = Counter(cfg.max_vocab_size)
    seen = []
    for s, g, tokens in token_stream(shards, cfg.tokenizer, dist.rank, dist.world_size, cfg.storage_options):
        counter.add(tokens)
        seen.append((s, g, len(tokens)))
    table, tokens = counter.result(), counter.tokens
    if dist.world_size > 1:
        parts = dist.all_gather_object((_ipc(table), tokens, seen))
        merged = Counter(cfg.max_vocab_size)
        for blob, _, _ in parts:
            merged.add_counts(pa.ipc.open_stream(blob).read_all())
        table, tokens = merged.result(), sum(p[1] for p in parts)
        seen = [x for p in parts for x in p[2]]
    row_tokens = [[(n, 0) for n in shard.row_groups] for shard in shards]
    for s, g, n in seen:
        row_tokens[s][g] = (shards[s].row_groups[g], n)
    vocab = Vocab.build(table, cfg.min_count, cfg.max_vocab, cfg.sample, raw_tokens=tokens, source=cfg.corpus)
    return vocab, row_tokens


def _ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return sink.getvalue().to_pybytes()


@dataclass
class Batch:
    examples: Examples
    words: int  # this rank's in-vocabulary words that this mini-batch accounts for
    epoch: int


def minibatches(chunks, batch_pairs: int) -> Iterator[Batch]:
    """Cut each chunk into mini-batches of at most ``batch_pairs`` examples, sharing its words out."""
    for chunk in chunks:
        ex, n = chunk.examples, len(chunk.examples)
        if n == 0:
            yield Batch(ex, ex.words, chunk.epoch)
            continue
        for start in range(0, n, batch_pairs):
            stop = min(start + batch_pairs, n)
            yield Batch(ex.slice(start, stop), ex.words * stop // n - ex.words * start // n, chunk.epoch)


def make_step(model: Word2Vec, dist: Dist):
    """``step(examples, lr) -> loss``. One process: the fused in-place kernel. Several: the same
    kernel's gradient through DistributedDataParallel, which all-reduces it (row-sparse on gloo),
    then SGD. DDP averages gradients; the learning rate is multiplied by the world size so that the
    update is the sum over ranks, as one process would apply to the union of their batches."""
    if not dist.distributed:
        return model.step
    from torch.nn.parallel import DistributedDataParallel as DDP

    ddp = DDP(model, device_ids=[dist.device] if dist.device.startswith("cuda") else None,
              broadcast_buffers=False)
    opt = torch.optim.SGD(model.parameters(), lr=0.0, foreach=False)

    def step(ex: Examples, lr: float) -> float:
        for group in opt.param_groups:
            group["lr"] = lr * dist.world_size
        loss = ddp(*model.batch(ex))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss)

    return step


def train(cfg: TrainConfig) -> dict:
    """Run a whole training job as described by ``cfg``; returns the summary (also in summary.json)."""
    with setup(cfg.device, cfg.backend) as dist:
        return _train(cfg, dist)


def _train(cfg: TrainConfig, dist: Dist) -> dict:
    so = cfg.storage_options
    # bad input fails here, before anything is written
    existing = check_run_dir(cfg)
    shards = scan_shards(cfg.corpus, cfg.text_column, so)
    t0 = time.perf_counter()
    vocab, row_tokens = build_vocab(cfg, shards, dist)
    vocab_uri = storage.join(cfg.output, "vocab")
    if dist.is_main:
        if existing:
            clear_run_dir(cfg)
        storage.makedirs(cfg.output, so)
        storage.write_text(storage.join(cfg.output, "config.json"), cfg.to_json(), so)
        vocab.save(vocab_uri, so)
    dist.barrier()
    if dist.is_local_main:  # one node-local copy of a remote vocabulary, made by one process
        vocab = Vocab.load(vocab_uri, so, cfg.cache_dir)
    dist.barrier()
    if not dist.is_local_main:
        vocab = Vocab.load(vocab_uri, so, cfg.cache_dir)
    log.info("vocabulary: %d words, %d words per epoch, %d shards (%.1fs)", len(vocab), vocab.total_words,
             len(shards), time.perf_counter() - t0)

    if cfg.kernel != "torch" and dist.device == "cpu":
        import numba
        numba.set_num_threads(cfg.threads or numba.config.NUMBA_NUM_THREADS)
    model = Word2Vec(len(vocab), cfg.dim, cfg.model, cfg.seed, dist.device, cfg.kernel,
                     sparse=not dist.device.startswith("cuda"))
    step_fn = make_step(model, dist)
    stream = CorpusStream(shards, vocab_uri, cfg.tokenizer, model=cfg.model, window=cfg.window,
                          negative=cfg.negative, seed=cfg.seed, epochs=cfg.epochs, batch_words=cfg.batch_words,
                          rank=dist.rank, world_size=dist.world_size, storage_options=so, cache_dir=cfg.cache_dir,
                          row_tokens=row_tokens)
    loader = DataLoader(stream, batch_size=None, num_workers=cfg.workers, collate_fn=identity,
                        worker_init_fn=worker_init, prefetch_factor=4 if cfg.workers else None,
                        multiprocessing_context="spawn" if cfg.workers else None)
    schedule = LinearSchedule(cfg.alpha, cfg.min_alpha, cfg.epochs * vocab.total_words)
    progress = Progress(schedule.total_words, storage.join(cfg.output, "metrics.jsonl"), cfg.log_every,
                        enabled=dist.is_main, storage_options=so)
    empty = Batch(Examples.empty(cfg.model, cfg.window, cfg.negative), 0, -1)
    words_done, step, with_data, epoch, lr = 0, 0, 0, 0, cfg.alpha
    for batch, words in synchronized(minibatches(loader, cfg.batch_pairs), dist, lambda b: b.words):
        with_data += batch is not None
        batch = batch or empty
        lr = schedule(words_done)
        loss = step_fn(batch.examples, lr)
        words_done += words
        step += 1
        epoch = max(epoch, batch.epoch)
        progress.update(words, len(batch.examples), loss, lr, step, epoch)
    final = progress.close(lr, step, epoch)
    log.log(logging.INFO if dist.distributed else logging.DEBUG, "rank done: steps=%d with_data=%d", step, with_data)

    summary = {"words": words_done, "steps": step, "epochs": cfg.epochs, "vocab_size": len(vocab),
               "world_size": dist.world_size, "sync_bytes_per_step": model.stats["sync_bytes"] / max(step, 1),
               "dim": cfg.dim, "model": cfg.model, "final_loss": final["loss"],
               "elapsed_s": final["elapsed_s"], "words_per_s": final["mean_words_per_s"]}
    if dist.is_main:
        state = {"step": step, "words_done": words_done, "epoch": cfg.epochs, "stream": stream.state_dict(),
                 "config": cfg.to_dict(), "vocab_fingerprint": vocab.meta["fingerprint"]}
        checkpoint.save(cfg.output, step, model.tables(), state, storage_options=so)
        buf = io.BytesIO()
        np.save(buf, model.vectors())
        storage.write_bytes(storage.join(cfg.output, "vectors.npy"), buf.getvalue(), so)
        storage.write_text(storage.join(cfg.output, "summary.json"), json.dumps(summary, indent=2), so)
        log.info("done: %d words in %.1fs (%.0f words/s); vectors in %s", words_done, final["elapsed_s"],
                 final["mean_words_per_s"], storage.join(cfg.output, "vectors.npy"))
    dist.barrier()
    return summary
