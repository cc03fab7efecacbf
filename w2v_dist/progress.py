"""Progress for humans and machines: a tqdm bar on a terminal, one plain log line per interval
otherwise, a JSON-lines metrics file in the run directory and TensorBoard scalars (rank 0 only).

A ``metrics.jsonl`` line: ``time`` (seconds since this attempt started), ``step``, ``epoch``,
``words`` (global words trained so far), ``progress``, ``lr``, ``loss`` (per example, over the
interval; 0 if it had none, null if not finite), ``examples`` (rank 0's, in the interval),
``words_per_s`` (over the span between the last two lines at which the global words advanced:
under torchrun they are counted at the exchanges of words, every few steps),
``data_wait`` (the share of the interval this rank's training waited for its reader); with
several ranks also ``sync_bytes`` (what each rank has sent to the table syncs so far) and
``rank_words_per_s`` (one rate per rank, over the same span); the first line after a
resumption has ``resumed_from`` (the words of the checkpoint it started from).
"""

from __future__ import annotations

import collections
import json
import logging
import math
import sys
import time
from typing import Callable

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from w2v_dist import storage

log = logging.getLogger("w2v_dist.train")

# summary.json's final_loss: the mean loss per example over the last steps of training that hold
# this many words (the whole run if it is shorter), whatever --log-every is
FINAL_LOSS_WORDS = 1_000_000
# an interval whose training waited this share of it for the reader says so on its line (and a
# run that waited this share of its time, at its end: training.time_waiting_for_data)
DATA_WAIT_SHOWN = 0.1


class Progress:
    def __init__(self, total_words: int, metrics_uri: str | None, every_s: float = 10.0,
                 enabled: bool = True, storage_options: dict | None = None, words_done: int = 0,
                 records: list[dict] | None = None, resumed_from: int | None = None, board=None,
                 extras: Callable[[], dict] | None = None, tail: list | None = None,
                 final_words: int = FINAL_LOSS_WORDS, epochs: int | None = None):
        self.total = total_words
        self.epochs = epochs  # the line says "epoch 2/5" (the records' "epoch" counts from 0)
        self.metrics_uri = metrics_uri
        self.every_s = every_s
        self.enabled = enabled
        self.storage_options = storage_options
        self.words = words_done
        self.start = self.last = time.perf_counter()
        self.start_words = self.last_words = words_done
        self.loss = 0.0
        self.examples = 0
        self.records: list[dict] = list(records or [])  # a resumed run keeps what came before
        self.resumed_from = resumed_from  # marked on the first line of a resumed attempt
        self.board = board  # TensorBoard scalars (w2v_dist.tensorboard.Board), or None
        # () -> {"reader_wait_s": seconds waited for data so far; several ranks: "sync_bytes": n,
        # "rank_words": [words of each rank]}
        self.extras = extras
        self.last_wait = 0.0  # reader_wait_s at the last line
        # the rates are over the span between the last two lines at which the words advanced: under
        # torchrun the words are counted at the exchanges, and a line between two of them read 0
        # words/s, the next one the exchange's words over one line's time (several times too high)
        self.rate, self.rate_at = 0.0, (self.start, words_done)
        self.rank_rates: list[float] | None = None
        self.rank_rate_at: tuple[float, list[int]] | None = None
        self.lines: list[str] = [_json_line(r) for r in self.records]  # metrics.jsonl, serialized once each
        # (words, loss, examples) of the latest steps, as few as hold final_words words: final_loss
        self.tail: collections.deque = collections.deque(tuple(t) for t in (tail or ()))
        self.tail_words, self.final_words = sum(t[0] for t in self.tail), final_words
        self.bar, self._redirect = None, None
        if enabled and sys.stderr.isatty() and log.isEnabledFor(logging.INFO):  # not with -q
            self.bar = tqdm(total=total_words, initial=words_done, unit="word", unit_scale=True,
                            dynamic_ncols=True, smoothing=0.1)
            # log lines above the bar, not written into its line (a warning landed after its "0%|")
            self._redirect = logging_redirect_tqdm()
            self._redirect.__enter__()

    def update(self, words: int, examples: int, loss: float, lr: float, step: int, epoch: int) -> None:
        self.words += words
        self.examples += examples
        self.loss += loss
        self.tail.append((words, loss, examples))
        self.tail_words += words
        while len(self.tail) > 1 and self.tail_words - self.tail[0][0] >= self.final_words:
            self.tail_words -= self.tail.popleft()[0]
        if self.bar is not None:
            self.bar.update(words)
        now = time.perf_counter()
        if now - self.last >= self.every_s:
            self.emit(now, lr, step, epoch)

    def emit(self, now: float, lr: float, step: int, epoch: int) -> dict:
        if self.words != self.rate_at[1]:
            self.rate = (self.words - self.rate_at[1]) / max(now - self.rate_at[0], 1e-9)
            self.rate_at = (now, self.words)
        rate = self.rate
        rec = {"time": round(now - self.start, 3), "step": step, "epoch": epoch, "words": self.words,
               "progress": round(self.words / max(self.total, 1), 6), "lr": lr,
               "loss": self.loss / max(self.examples, 1), "examples": self.examples, "words_per_s": round(rate, 1)}
        if self.extras is not None:
            extra = dict(self.extras())
            wait = extra.pop("reader_wait_s", None)
            if wait is not None:
                rec["data_wait"] = round(min(max((wait - self.last_wait) / max(now - self.last, 1e-9), 0.0), 1.0), 4)
                self.last_wait = wait
            rank_words = extra.pop("rank_words", None)
            if rank_words:
                at, before = self.rank_rate_at or (self.start, [0] * len(rank_words))
                if self.rank_rates is None or list(rank_words) != before:
                    self.rank_rates = [round((a - b) / max(now - at, 1e-9), 1) for a, b in zip(rank_words, before)]
                    self.rank_rate_at = (now, list(rank_words))
                rec["rank_words_per_s"] = self.rank_rates
            rec.update(extra)
        if self.resumed_from is not None and self.enabled:
            rec["resumed_from"], self.resumed_from = self.resumed_from, None
        self.last, self.last_words, self.loss, self.examples = now, self.words, 0.0, 0
        if self.enabled:
            self.records.append(rec)
            self.lines.append(_json_line(rec))
            # an interval spent mostly waiting for the reader is said on its line (docs/training.md)
            waiting = rec.get("data_wait", 0.0) >= DATA_WAIT_SHOWN
            if self.bar is not None:
                self.bar.set_postfix(loss=f"{rec['loss']:.4f}", lr=f"{lr:.5f}",
                                     **({"waiting": f"{100 * rec['data_wait']:.0f}%"} if waiting else {}),
                                     refresh=False)
            else:
                # from the session's mean rate: an interval's can be 0 (ranks count their words at
                # the exchanges, every --sync-every steps) and gave etas of 10^13 s at --log-every 0
                mean = (self.words - self.start_words) / max(now - self.start, 1e-9)
                eta = f"{(self.total - self.words) / mean:.0f}s" if mean > 0 else "?"
                loss = f"{rec['loss']:.4f}" if rec["examples"] else "-"  # rank 0 trained nothing since the last line
                log.info("epoch %s step %d  %5.1f%%  loss %s  lr %.6f  %.0f words/s  eta %s%s",
                         f"{epoch + 1}/{self.epochs}" if self.epochs else epoch + 1, step, 100 * rec["progress"],
                         loss, lr, rate, eta,
                         f"  waiting for data {100 * rec['data_wait']:.0f}%" if waiting else "")
            self._write()
            if self.board is not None:
                self.board.write(rec)
        return rec

    def _write(self) -> None:
        if self.metrics_uri is None:
            return
        storage.write_text(self.metrics_uri, "".join(self.lines), self.storage_options)

    def close(self, lr: float, step: int, epoch: int) -> dict:
        if self.words == self.last_words and self.examples == 0 and self.records:
            rec = dict(self.records[-1])  # the last step was logged: no empty interval (loss 0, 0 words/s)
        else:
            rec = dict(self.emit(time.perf_counter(), lr, step, epoch))  # the summary's; the line stays as logged
        self.end()
        if self.board is not None:
            self.board.close()
        elapsed = time.perf_counter() - self.start
        rec["elapsed_s"] = round(elapsed, 3)  # this session's: a resumed run counts from its resumption
        rec["session_words"] = self.words - self.start_words
        rec["mean_words_per_s"] = round(rec["session_words"] / max(elapsed, 1e-9), 1)
        rec["final_loss"] = self.final_loss()
        return rec

    def end(self) -> None:
        """Close the bar (before a stop's last lines: its final state printed after them) and give
        the log lines their handlers back."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self._redirect is not None:
            self._redirect.__exit__(None, None, None)
            self._redirect = None

    def final_loss(self) -> float | None:
        """Mean loss per example over the last ``final_words`` words of training (rank 0's examples);
        None where those words held no example (summary.json's null, as the progress line's "-")."""
        examples = sum(t[2] for t in self.tail)
        return sum(t[1] for t in self.tail) / examples if examples else None


def _json_line(rec: dict) -> str:
    """A metrics.jsonl line: strict JSON, a loss that is not finite (a diverged run's) as null
    (Python's default wrote NaN, which strict parsers refuse)."""
    return json.dumps({k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in rec.items()},
                      allow_nan=False) + "\n"


class DivergedError(RuntimeError):
    """Training diverged: the loss went non-finite or far above where it started."""


class Guard:
    """Watches the loss per example; :meth:`update` returns 1 once it is non-finite or more than
    ``factor`` times its starting value, ``(1 + negative) * ln 2`` (the loss of every example while
    the output vectors are still zero), over at least ``every`` examples."""

    def __init__(self, negative: int, alpha: float, factor: float = 3.0, every: int = 10_000, lr_scale: int = 1):
        self.start = (1 + negative) * math.log(2)
        self.alpha, self.limit, self.every, self.lr_scale = alpha, factor * self.start, every, lr_scale
        self.loss, self.examples = 0.0, 0
        self.worst: float | None = None
        self.checkpointed = False  # the run has a checkpoint to go on from (set by the loop)

    def update(self, loss: float, examples: int) -> int:
        if self.worst is not None:
            return 1
        self.loss += loss
        self.examples += examples
        if not math.isfinite(self.loss) or (self.examples >= self.every and self.loss / self.examples > self.limit):
            self.worst = self.loss / max(self.examples, 1)
            return 1
        if self.examples >= self.every:
            self.loss, self.examples = 0.0, 0
        return 0

    def message(self, step: int, epoch: int, losses: list[float | None] | None = None) -> str:
        """The one line a stopped run says. ``losses``: with several ranks, each rank's loss per
        example where its guard fired, None where it did not."""
        if losses is None or len(losses) == 1:
            where = f"loss per example {self.worst:.4g}"
        else:
            fired = {rank: x for rank, x in enumerate(losses) if x is not None}
            finite = sorted(x for x in fired.values() if math.isfinite(x))
            values = [f"{finite[0]:.4g}" + (f" to {finite[-1]:.4g}" if len(finite) > 1 else "")] if finite else []
            if len(finite) < len(fired):
                values.append(f"not finite on {len(fired) - len(finite)}" if finite else "not finite")
            ranks = (f"rank {next(iter(fired))}" if len(fired) == 1 else f"ranks {', '.join(map(str, fired))}"
                     if len(fired) <= 8 else f"{len(fired)} ranks")
            where = f"on {ranks} of {len(losses)}, loss per example {', '.join(values)}"
        scaled = (f"; each rank trains at {self.lr_scale:g} x --alpha with --sync-combine mean" if self.lr_scale > 1
                  else "")
        if self.checkpointed:
            kept, again = ("nothing was written past the last checkpoint", "again with --overwrite, or --force-resume to "
                           "go on from the last checkpoint")
        else:
            kept, again = "no checkpoint was written yet", "again with --overwrite"
        return (f"training diverged at step {step} (epoch {epoch + 1}): {where}, against {self.start:.3f} at the start; "
                f"{kept}. Lower --alpha (now {self.alpha:g}{scaled}) and run {again}")
