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

import numpy as np
import torch
from torch.utils.data import DataLoader

from w2v_dist import checkpoint, storage
from w2v_dist.config import ConfigError, TrainConfig
from w2v_dist.corpus.dataset import CorpusStream, identity, token_stream, worker_init
from w2v_dist.corpus.shards import scan_shards
from w2v_dist.distributed import Dist, setup
from w2v_dist.model import Word2Vec
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


def build_vocab(cfg: TrainConfig, shards, dist: Dist) -> Vocab:
    counter = Counter(cfg.max_vocab_size)
    for tokens in token_stream(shards, cfg.tokenizer, dist.rank, dist.world_size, cfg.storage_options):
        counter.add(tokens)
    table, tokens = counter.result(), counter.tokens
    if dist.world_size > 1:  # merge every rank's counts, pruned the same way
        parts = dist.all_gather_object((table.to_pydict(), tokens))
        merged = Counter(cfg.max_vocab_size)
        import pyarrow as pa
        for d, _ in parts:
            merged.add_counts(pa.table(d))
        table, tokens = merged.result(), sum(t for _, t in parts)
    return Vocab.build(table, cfg.min_count, cfg.max_vocab, cfg.sample, raw_tokens=tokens, source=cfg.corpus)


def train(cfg: TrainConfig) -> dict:
    """Run a whole training job as described by ``cfg``; returns the summary (also in summary.json)."""
    with setup(cfg.device) as dist:
        return _train(cfg, dist)


def _train(cfg: TrainConfig, dist: Dist) -> dict:
    so = cfg.storage_options
    # bad input fails here, before anything is written
    existing = check_run_dir(cfg)
    shards = scan_shards(cfg.corpus, cfg.text_column, so)
    t0 = time.perf_counter()
    vocab = build_vocab(cfg, shards, dist)
    vocab_uri = storage.join(cfg.output, "vocab")
    if dist.is_main:
        if existing:
            clear_run_dir(cfg)
        storage.makedirs(cfg.output, so)
        storage.write_text(storage.join(cfg.output, "config.json"), cfg.to_json(), so)
        vocab.save(vocab_uri, so)
    dist.barrier()
    vocab = Vocab.load(vocab_uri, so)
    log.info("vocabulary: %d words, %d words per epoch, %d shards (%.1fs)", len(vocab), vocab.total_words,
             len(shards), time.perf_counter() - t0)

    if cfg.kernel != "torch" and dist.device == "cpu":
        import numba
        numba.set_num_threads(cfg.threads or numba.config.NUMBA_NUM_THREADS)
    model = Word2Vec(len(vocab), cfg.dim, cfg.model, cfg.seed, dist.device, cfg.kernel)
    stream = CorpusStream(shards, vocab_uri, cfg.tokenizer, model=cfg.model, window=cfg.window,
                          negative=cfg.negative, seed=cfg.seed, epochs=cfg.epochs, batch_words=cfg.batch_words,
                          rank=dist.rank, world_size=dist.world_size, storage_options=so)
    loader = DataLoader(stream, batch_size=None, num_workers=cfg.workers, collate_fn=identity,
                        worker_init_fn=worker_init, prefetch_factor=4 if cfg.workers else None,
                        multiprocessing_context="spawn" if cfg.workers else None)
    schedule = LinearSchedule(cfg.alpha, cfg.min_alpha, cfg.epochs * vocab.total_words)
    progress = Progress(schedule.total_words, storage.join(cfg.output, "metrics.jsonl"), cfg.log_every,
                        enabled=dist.is_main, storage_options=so)
    words_done, step, epoch, lr = 0, 0, 0, cfg.alpha
    for chunk in loader:
        ex, epoch = chunk.examples, chunk.epoch
        n, loss = len(ex), 0.0
        for start in range(0, n, cfg.batch_pairs):
            lr = schedule(words_done + ex.words * start / n)
            loss += model.step(ex.slice(start, start + cfg.batch_pairs), lr)
            step += 1
        words_done += ex.words
        progress.update(ex.words, n, loss, lr, step, epoch)
    final = progress.close(lr, step, epoch)

    summary = {"words": words_done, "steps": step, "epochs": cfg.epochs, "vocab_size": len(vocab),
               "dim": cfg.dim, "model": cfg.model, "final_loss": final["loss"],
               "elapsed_s": final["elapsed_s"], "words_per_s": final["mean_words_per_s"]}
    if dist.is_main:
        state = {"step": step, "words_done": words_done, "epoch": cfg.epochs, "stream": stream.state_dict(),
                 "config": cfg.to_dict(), "vocab_fingerprint": vocab.meta["fingerprint"]}
        checkpoint.save(cfg.output, step, {"in_embed": model.in_embed, "out_embed": model.out_embed}, state,
                        storage_options=so)
        buf = io.BytesIO()
        np.save(buf, model.vectors())
        storage.write_bytes(storage.join(cfg.output, "vectors.npy"), buf.getvalue(), so)
        storage.write_text(storage.join(cfg.output, "summary.json"), json.dumps(summary, indent=2), so)
        log.info("done: %d words in %.1fs (%.0f words/s); vectors in %s", words_done, final["elapsed_s"],
                 final["mean_words_per_s"], storage.join(cfg.output, "vectors.npy"))
    dist.barrier()
    return summary
