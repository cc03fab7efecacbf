"""`w2v-dist plot`: curves.png and map.png decode, have the promised size, show something, and the
map's labels do not overlap. Also where the curves mark epochs and resumptions."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from w2v_dist.cli import run  # noqa: E402
from w2v_dist.plot import PlotError, epoch_starts, map_figure, resumptions  # noqa: E402
from w2v_dist.vectors import Vectors  # noqa: E402


def decoded(path) -> np.ndarray:
    from matplotlib.image import imread

    return imread(path)


def test_curves_and_map_of_a_finished_run(plain_run, tmp_path, capsys):
    """Guards: an image cut to the figure's tight box or a blank canvas (nothing drawn)."""
    assert run(["plot", str(plain_run), "--output", str(tmp_path)]) == 0
    assert capsys.readouterr().out.split() == [str(tmp_path / "curves.png"), str(tmp_path / "map.png")]
    for name in ("curves.png", "map.png"):
        img = decoded(tmp_path / name)
        assert img.shape[:2] == (1000, 1600), name
        gray = img[..., :3].mean(axis=2)
        assert gray.var() > 0.005 and (gray < 0.5).mean() > 0.01, name  # dark ink on white, not a blank page


def test_map_labels_do_not_overlap(plain_run):
    """Guards: labels drawn over each other into a blur (the placement checking the wrong boxes)."""
    fig = map_figure(Vectors.load(str(plain_run)), top=200)
    renderer = fig.canvas.get_renderer()
    (ax,) = fig.axes
    boxes = [t.get_window_extent(renderer) for t in ax.texts if t.get_text()]  # not the leader lines
    assert len(boxes) > 100  # most of the 200 words get a label
    frame = ax.get_window_extent(renderer)
    for i, a in enumerate(boxes):
        assert frame.x0 <= a.x0 and a.x1 <= frame.x1 and frame.y0 <= a.y0 and a.y1 <= frame.y1
        assert not any(a.overlaps(b) for b in boxes[i + 1:]), i


def test_chosen_words_not_in_the_vocabulary_fail_in_one_line(plain_run, tmp_path):
    with pytest.raises(PlotError) as e:
        run(["plot", str(plain_run), "--output", str(tmp_path), "--words", "the", "of", "zzyzx"])
    assert "\n" not in str(e.value) and "not in the vocabulary" in str(e.value) and "zzyzx" in str(e.value)
    assert not (tmp_path / "map.png").exists()


def test_an_unfinished_run_gets_its_curves(plain_run, tmp_path):
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    for name in ("config.json", "metrics.jsonl"):
        shutil.copy(plain_run / name, unfinished / name)
    assert run(["plot", str(unfinished), "--output", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "curves.png").exists() and not (tmp_path / "out" / "map.png").exists()


def test_epochs_and_resumptions_are_placed_where_they_happened():
    """Guards: epoch lines from the logged epoch numbers (off by up to an interval), a resumption
    missed in files that predate ``resumed_from`` (their ``time`` restarts at each attempt)."""
    recs = [{"time": t, "words": w, "progress": w / 3000} for t, w in ((1, 700), (2, 1400), (3, 2100), (4, 3000))]
    assert epoch_starts(recs, 3) == [1000, 2000] and epoch_starts(recs, 1) == []
    assert resumptions(recs) == []
    recs[2] = {**recs[2], "time": 0.5, "resumed_from": 1500}
    assert resumptions(recs) == [1500]
    del recs[2]["resumed_from"]
    assert resumptions(recs) == [1400]
    assert json.dumps(recs)  # plain JSON, as in metrics.jsonl


def test_an_unfinished_run_s_later_epochs_and_a_diverged_run_s_null_loss_draw_cleanly(plain_run, tmp_path):
    """Guards: epoch lines past the last record of a killed run (constrained_layout collapsed the
    panels to the middle: 'axes sizes collapsed to zero'), the 'resumed' label printed over the
    'epoch 2' one at the same place, and a null loss (a diverged run's) failing the plot."""
    import warnings

    from w2v_dist.plot import curves_figure

    recs = [{"time": i, "step": i, "words": 100 * i, "progress": i / 60, "lr": 0.02, "loss": 3.0, "examples": 10,
             "words_per_s": 1000.0} for i in range(1, 20)]  # 19 of 60 steps: under a third of 6 epochs
    recs[10] = {**recs[10], "resumed_from": 1000}  # resumed at epoch 2's start
    recs[-1] = {**recs[-1], "loss": None}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib's layout warning fails the test
        fig = curves_figure(recs, {"epochs": 6})
        fig.canvas.draw()
    labels = {t.get_text(): t for t in fig.axes[0].texts}
    assert set(labels) == {"epoch 2", "resumed"}  # epochs 3-6 lie past the data: not drawn
    renderer = fig.canvas.get_renderer()
    assert not labels["epoch 2"].get_window_extent(renderer).overlaps(labels["resumed"].get_window_extent(renderer))


def test_chosen_words_ignore_case_and_too_few_are_refused_first(plain_run, tmp_path):
    """--words finds 'The' as similar and eval do; --top 2 is refused before anything is written
    (it failed after curves.png)."""
    assert run(["plot", str(plain_run), "--output", str(tmp_path / "a"), "--words", "The", "OF", "and"]) == 0
    with pytest.raises(Exception, match=r"--top must be >= 3"):
        run(["plot", str(plain_run), "--output", str(tmp_path / "b"), "--top", "2"])
    assert not (tmp_path / "b").exists()
    with pytest.raises(PlotError, match=r"at least 3 different words, got 2"):
        run(["plot", str(plain_run), "--output", str(tmp_path / "c"), "--words", "the", "the", "of"])
