"""Pictures of a run (``w2v-dist plot RUN --output DIR``; matplotlib, from the ``viz`` extra):

- ``curves.png``: loss per example, learning rate and words/s against the words trained, from
  ``<run>/metrics.jsonl``, with the epoch boundaries and any resumption marked;
- ``map.png``: the words' unit vectors projected on their first two principal components, the
  chosen words or the most frequent ones, labelled where a label does not cover another.

Both 1600 x 1000 px. An unfinished run gets its curves (and no map: it has no vectors yet).

>>> from w2v_dist.plot import plot_run
>>> plot_run("runs/r1", "runs/r1/plots", words=["king", "queen", "man", "woman"])   # doctest: +SKIP
{'curves': 'runs/r1/plots/curves.png', 'map': 'runs/r1/plots/map.png'}
"""

from __future__ import annotations

import io
import json
import logging
import math
from typing import Sequence

import numpy as np

from w2v_dist import storage

log = logging.getLogger(__name__)

SIZE_IN, DPI = (16, 10), 100  # 1600 x 1000 px
TOP_WORDS = 200


class PlotError(ValueError):
    """A run that cannot be drawn, or matplotlib missing; the message says what to do."""


def plot_run(run: str, output: str, words: Sequence[str] | None = None, top: int = TOP_WORDS,
             storage_options: dict | None = None) -> dict[str, str]:
    """Write ``curves.png`` and (for a finished run) ``map.png`` into ``output``; returns their URIs."""
    _matplotlib()
    records = read_metrics(run, storage_options)
    config = _read_json(storage.join(run, "config.json"), storage_options) or {}
    name = run.rstrip("/").rsplit("/", 1)[-1]
    paths = {"curves": storage.join(output, "curves.png")}
    _save(curves_figure(records, config, name), paths["curves"], storage_options)
    if storage.exists(storage.join(run, "summary.json"), storage_options):
        from w2v_dist.vectors import Vectors

        paths["map"] = storage.join(output, "map.png")
        _save(map_figure(Vectors.from_run_dir(run, storage_options), words, top, name), paths["map"],
              storage_options)
    else:
        log.warning("%s: no map: the run is unfinished (it has no vectors yet)", run)
    return paths


def read_metrics(run: str, storage_options: dict | None = None) -> list[dict]:
    uri = storage.join(run, "metrics.jsonl")
    if not storage.exists(uri, storage_options):
        raise PlotError(f"{run}: no metrics.jsonl (not a training run, or it has not logged an interval yet)")
    records = [json.loads(line) for line in storage.read_bytes(uri, storage_options).decode().splitlines() if line]
    if not records:
        raise PlotError(f"{uri}: empty (the run has not logged an interval yet)")
    return records


def resumptions(records: list[dict]) -> list[int]:
    """The words where the run was resumed: ``resumed_from`` on the first line of a resumed
    attempt, or, in files from before that field, a line whose ``time`` (seconds since its
    attempt started) went back (the words of the line before)."""
    marks = []
    for prev, rec in zip([None, *records], records):
        if "resumed_from" in rec:
            marks.append(int(rec["resumed_from"]))
        elif prev is not None and rec["time"] < prev["time"]:
            marks.append(int(prev["words"]))
    return marks


def epoch_starts(records: list[dict], epochs: int) -> list[float]:
    """Words at which epochs 2, 3, ... begin: the schedule's total (words / progress) split evenly."""
    last = max(records, key=lambda r: r["words"])
    if epochs < 2 or not last.get("progress"):
        return []
    total = last["words"] / last["progress"]
    return [k * total / epochs for k in range(1, epochs)]


def curves_figure(records: list[dict], config: dict, name: str = "run"):
    from matplotlib.ticker import EngFormatter

    fig = _figure(layout="constrained")
    axes = fig.subplots(3, 1, sharex=True, height_ratios=(2, 1, 1.4))
    words = np.array([r["words"] for r in records], dtype=float)
    # no examples: no loss; null: not finite (a diverged run's last lines)
    with_loss = [i for i, r in enumerate(records) if r.get("examples", 1) > 0 and r.get("loss") is not None]
    loss = np.array([records[i]["loss"] for i in with_loss])
    dots = {"marker": "o", "ms": 3} if len(records) < 50 else {}  # few points: show each
    ax = axes[0]
    ax.plot(words[with_loss], loss, color="#1f77b4", lw=1, alpha=0.35 if len(loss) >= 50 else 1,
            label="per log interval", **dots)
    if len(loss) >= 50:
        ax.plot(words[with_loss], _smooth(loss), color="#1f77b4", lw=2.2, label="smoothed")
        ax.legend(loc="upper right", fontsize=11, frameon=False)
    ax.set_ylabel("loss per example (nats)", fontsize=12)
    ax.set_title("training loss", fontsize=14, loc="left")

    ax = axes[1]
    ax.plot(words, [r["lr"] for r in records], color="#2ca02c", lw=2, **dots)
    ax.set_ylabel("learning rate", fontsize=12)
    ax.set_title("learning rate (linear decay over all epochs' words)", fontsize=14, loc="left")
    ax.set_ylim(bottom=0)

    ax = axes[2]
    ax.plot(words, [r["words_per_s"] for r in records], color="#d62728", lw=1.8,
            label="all ranks" if "rank_words_per_s" in records[-1] else None, **dots)
    per_rank = [r.get("rank_words_per_s") for r in records]
    if per_rank[-1]:
        ranks = len(per_rank[-1])
        for k in range(ranks):
            pts = [(w, p[k]) for w, p in zip(words, per_rank) if p and len(p) == ranks]
            ax.plot(*zip(*pts), lw=0.9, alpha=0.7, label=f"rank {k}" if ranks <= 8 else None)
        ax.legend(loc="lower right", fontsize=10, frameon=False, ncol=min(ranks + 1, 5))
    ax.set_ylabel("words/s", fontsize=12)
    ax.set_title("throughput", fontsize=14, loc="left")
    ax.set_ylim(bottom=0)
    ax.yaxis.set_major_formatter(EngFormatter(sep=""))
    ax.set_xlabel("words trained (all ranks)", fontsize=12)
    ax.xaxis.set_major_formatter(EngFormatter(sep=""))

    for ax in axes:
        ax.grid(True, alpha=0.3)
        ax.tick_params(labelsize=11)
        ax.set_xlim(0, words.max() * 1.01 if len(words) and words.max() > 0 else 1)
    # an unfinished run's later epochs lie past its last line: not drawn (they collapsed the layout)
    end = words.max() if len(words) else 0.0
    starts = [(k, x) for k, x in enumerate(epoch_starts(records, int(config.get("epochs", 1))), start=2) if x <= end]
    for k, x in starts:
        for ax in axes:
            ax.axvline(x, color="0.45", ls=":", lw=1.3)
        axes[0].annotate(f"epoch {k}", (x, 1), xycoords=("data", "axes fraction"), xytext=(4, -14),
                         textcoords="offset points", fontsize=11, color="0.3")
    for x in resumptions(records):
        for ax in axes:
            ax.axvline(x, color="#9467bd", ls="--", lw=1.6)
        # a run resumes where it checkpointed, often an epoch's start: one label below the other there
        near = any(abs(x - s) <= 0.06 * max(end, 1.0) for _, s in starts)
        axes[0].annotate("resumed", (x, 1), xycoords=("data", "axes fraction"), xytext=(-4, -30 if near else -14),
                         ha="right", textcoords="offset points", fontsize=11, color="#9467bd", weight="bold")
    fig.suptitle(_describe(name, config, records), fontsize=16)
    return fig


def map_figure(vectors, words: Sequence[str] | None = None, top: int = TOP_WORDS, name: str = "run"):
    """A 2-D PCA of the unit vectors of ``words`` (default: the ``top`` most frequent), labelled
    in order of priority (the given order, or frequency) wherever a label fits."""
    if words:
        found: dict[str, str] = {}
        for w in words:  # case ignored where the exact word is not there, as similar and eval do
            try:
                found[w] = vectors.resolve(w)
            except KeyError:
                pass
        missing = [w for w in words if w not in found]
        if missing:
            raise PlotError(f"not in the vocabulary of {name}: {', '.join(missing)} (check the spelling, "
                            f"or train with a lower --min-count)")
        rows = [vectors.index(w) for w in dict.fromkeys(found.values())]
    else:
        rows = list(range(min(top, len(vectors))))
    if len(rows) < 3:
        raise PlotError(f"a map needs at least 3 different words, got {len(rows)}")
    labels = [vectors.words[i] for i in rows]
    x = vectors.unit[rows].astype(np.float64)
    x -= x.mean(axis=0)
    _, s, vt = np.linalg.svd(x, full_matrices=False)
    xy = x @ vt[:2].T
    share = s[:2] ** 2 / max(float((s ** 2).sum()), 1e-30)

    few = len(rows) <= 40
    fig = _figure()
    ax = fig.add_axes((0.06, 0.07, 0.91, 0.84))
    ax.scatter(xy[:, 0], xy[:, 1], s=36 if few else 14, color="#1f77b4", alpha=0.85, zorder=2, linewidths=0)
    pad = 0.06 * max(np.ptp(xy[:, 0]), np.ptp(xy[:, 1]), 1e-9)
    ax.set_xlim(xy[:, 0].min() - pad, xy[:, 0].max() + pad)
    ax.set_ylim(xy[:, 1].min() - pad, xy[:, 1].max() + pad)
    ax.set_xlabel(f"first principal component ({100 * share[0]:.1f}% of the variance)", fontsize=12)
    ax.set_ylabel(f"second principal component ({100 * share[1]:.1f}% of the variance)", fontsize=12)
    ax.grid(True, alpha=0.25)
    ax.tick_params(labelsize=10)
    shown = place_labels(fig, ax, xy, labels, fontsize=13 if few else 10)
    chosen = f"{len(rows)} chosen words" if words else f"the {len(rows)} most frequent words"
    hidden = f" ({len(rows) - shown} labels left out where they would overlap)" if shown < len(rows) else ""
    fig.suptitle(f"{name}: {chosen}", fontsize=16, y=0.985)
    ax.set_title(f"unit vectors projected on their first two principal components; {shown} of {len(rows)} "
                 f"labelled{hidden}", fontsize=12, color="0.3")
    return fig


# offsets (points) tried in turn: right, left, above, below, the diagonals; then the same further
# out, joined to the point by a thin leader line
_NEAR = ((5, -4), (-5, -4), (0, 6), (0, -13), (5, 5), (-5, 5), (5, -12), (-5, -12))
_FAR = ((16, -4), (-16, -4), (0, 18), (0, -25), (14, 14), (-14, 14), (14, -22), (-14, -22))


def place_labels(fig, ax, xy: np.ndarray, labels: Sequence[str], fontsize: float = 10) -> int:
    """Label points in order, each at the first offset where its box stays inside the axes and
    covers no label placed before and no other point (a label over a point reads as that point's);
    a label that fits nowhere is left out. Returns how many were placed."""
    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    dots = ax.transData.transform(xy)
    r = 3.0  # pixels: a dot's radius, about
    placed = []
    for i, ((px, py), label) in enumerate(zip(xy, labels)):
        others = np.delete(dots, i, axis=0)
        for dx, dy in _NEAR + _FAR:
            text = ax.annotate(label, (px, py), xytext=(dx, dy), textcoords="offset points", fontsize=fontsize,
                               ha="left" if dx > 0 else "right" if dx < 0 else "center", va="bottom",
                               color="0.1", zorder=3)
            box = text.get_window_extent(renderer).expanded(1.04, 1.08)
            inside = frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
            covers = ((others[:, 0] > box.x0 - r) & (others[:, 0] < box.x1 + r)
                      & (others[:, 1] > box.y0 - r) & (others[:, 1] < box.y1 + r)).any()
            if inside and not covers and not any(box.overlaps(b) for b in placed):
                placed.append(box)
                if (dx, dy) in _FAR:
                    ax.annotate("", (px, py), xytext=(dx * 0.8, dy + (4 if dy < 0 else 0)), textcoords="offset points",
                                arrowprops={"arrowstyle": "-", "color": "0.55", "lw": 0.7, "shrinkA": 0, "shrinkB": 2})
                break
            text.remove()
    return len(placed)


def _describe(name: str, config: dict, records: list[dict]) -> str:
    what = [config.get("model", "?"), f"dim {config['dim']}" if "dim" in config else None,
            f"{config['epochs']} epochs" if "epochs" in config else None,
            f"{_count(records[-1]['words'])} words trained"]
    done = records[-1].get("progress", 0)
    if done < 1:
        what.append(f"{100 * done:.0f}% done")
    return f"{name}: " + ", ".join(w for w in what if w)


def _count(n: float) -> str:
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= div:
            return f"{n / div:.3g}{unit}"
    return str(int(n))


def _smooth(y: np.ndarray) -> np.ndarray:
    """An exponential moving average over about 1/25 of the series, started at its first value."""
    alpha = 1 - math.exp(-25 / len(y))
    out, acc = np.empty_like(y, dtype=float), float(y[0])
    for i, v in enumerate(y):
        acc += alpha * (v - acc)
        out[i] = acc
    return out


def _figure(**kwargs):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=SIZE_IN, dpi=DPI, **kwargs)  # no pyplot: no global state, no GUI backend
    FigureCanvasAgg(fig)
    return fig


def _save(fig, uri: str, storage_options: dict | None) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, facecolor="white")
    storage.write_bytes(uri, buf.getvalue(), storage_options)


def _read_json(uri: str, storage_options: dict | None) -> dict | None:
    return json.loads(storage.read_bytes(uri, storage_options)) if storage.exists(uri, storage_options) else None


def _matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise PlotError("w2v-dist plot needs matplotlib: pip install 'w2v-dist[viz]'") from None
