"""``w2v-dist train`` with the learning rate gensim's ``corpus_file`` mode actually applies with
``--workers`` W workers, to check that the skip-gram WS-353 gap against ``bench/vs_gensim.py``'s
gensim (2 workers) is that schedule and not our step (docs/training.md, "Initialisation, and what
gensim's numbers are made of"). A benchmark's patch, not a feature: word2vec.c's schedule stays
the product's.

    python bench/gensim_schedule.py --workers 2 --epochs 5 -- train SHARDS --output RUN --model sg --seed 1

gensim (``word2vec_corpusfile.pyx``) decays the rate by each worker's own progress against the
whole epoch's words, and each worker reads 1/W of the epoch: within epoch ``e`` the rate follows
``alpha - (alpha - min_alpha) * (e + f / W) / epochs`` for the epoch's fraction ``f`` done, instead
of ``(e + f) / epochs``. With W = 2 it falls half as far in each epoch and ends at 10% of
``alpha`` after 5 epochs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from w2v_dist import training  # noqa: E402
from w2v_dist.cli import main as cli_main  # noqa: E402


def gensim_rate(schedule: training.LinearSchedule, words_done: float, epochs: int, workers: int) -> float:
    """The rate gensim's ``corpus_file`` mode with ``workers`` workers gives at ``words_done``."""
    per_epoch = schedule.total_words / epochs
    epoch = min(int(words_done // per_epoch), epochs - 1)
    done = min((words_done - epoch * per_epoch) / per_epoch, 1.0)
    frac = (epoch + done / workers) / epochs
    return max(schedule.alpha - (schedule.alpha - schedule.min_alpha) * frac, schedule.min_alpha)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", type=int, default=2, help="gensim's workers whose schedule to apply")
    p.add_argument("--epochs", type=int, required=True, help="the run's --epochs")
    p.add_argument("args", nargs=argparse.REMAINDER, help="-- then the w2v-dist command line")
    a = p.parse_args()
    args = a.args[1:] if a.args[:1] == ["--"] else a.args
    if "--epochs" in args[:-1] and args[args.index("--epochs") + 1] != str(a.epochs):
        p.error(f"--epochs {a.epochs} differs from the train command's --epochs {args[args.index('--epochs') + 1]}")
    training.LinearSchedule.__call__ = lambda self, w: gensim_rate(self, w, a.epochs, a.workers)
    sys.exit(cli_main(args))


if __name__ == "__main__":
    main()
