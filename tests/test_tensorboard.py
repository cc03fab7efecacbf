"""TensorBoard scalars: read back with tensorboard's own EventAccumulator (the reader behind
`tensorboard --logdir`), graded against metrics.jsonl, the run's plain-text log of the same records."""

from __future__ import annotations

import json
import os
import signal

import numpy as np
import pytest

from tests.conftest import cli

EventAccumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator").EventAccumulator

TAGS = {"train/loss", "train/lr", "train/words_per_s", "train/progress", "train/epoch", "train/data_wait"}


def scalars(run) -> dict[str, list]:
    acc = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0})  # 0: keep every point
    acc.Reload()
    return {tag: acc.Scalars(tag) for tag in acc.Tags()["scalars"]}


def metrics(run) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_a_point_per_logged_interval(plain_run):
    """Guards: scalars not written, written at another step than the words trained (the step axis
    that survives resumption and changes of rank count), or a last interval lost at close."""
    got, records = scalars(plain_run), metrics(plain_run)
    assert set(got) == TAGS
    for tag in TAGS:
        assert [e.step for e in got[tag]] == [r["words"] for r in records], tag
    assert got["train/lr"][-1].value == np.float32(records[-1]["lr"])  # the final lr
    assert [e.value for e in got["train/loss"]] == [np.float32(r["loss"]) for r in records]
    assert got["train/progress"][-1].value == 1.0
    assert [e.value for e in got["train/data_wait"]] == [np.float32(r["data_wait"]) for r in records]
    assert all(0 <= r["data_wait"] <= 1 for r in records)


def test_resumed_run_continues_the_curves(plain_corpus, tmp_path):
    """Guards: a resumed run that restarts its curves or repeats the steps the killed attempt
    logged past its checkpoint (step 10; killed after step 12, every step logged)."""
    run = tmp_path / "r"
    args = ["train", str(plain_corpus), "--output", str(run), "--epochs", "1", "--dim", "8", "--min-count", "3",
            "--threads", "1", "--batch-words", "1000", "--log-every", "0", "--checkpoint-every", "5"]
    p = cli(*args, check=False, env={"W2V_DIST_FAULT": "kill@step:0:12"})
    assert p.returncode == -signal.SIGKILL
    killed = scalars(run)["train/loss"]
    assert [e.step for e in killed][-1] > metrics(run)[9]["words"]  # the killed attempt logged past step 10
    cli(*args)
    records = metrics(run)
    assert [r["step"] for r in records] == list(range(1, len(records) + 1))
    (resumed,) = [r for r in records if "resumed_from" in r]
    assert resumed["step"] == 11 and resumed["resumed_from"] == records[9]["words"]
    got = scalars(run)
    assert len(list((run / "tensorboard").glob("events.out.tfevents.*"))) == 2  # one per attempt
    for tag in TAGS:
        assert [e.step for e in got[tag]] == [r["words"] for r in records], tag  # increasing, none twice
    assert [e.value for e in got["train/lr"]] == [np.float32(r["lr"]) for r in records]


def test_two_ranks_add_per_rank_rates_and_sync_bytes(two_ranks):
    """Guards: a rank's words counted in another rank's slot, or rates that do not add up to the
    words each rank trained (over the lines where the words advanced, each rate times the time
    since the last such line, summed over ranks = all words); a line between two exchanges of
    words reading 0 words/s and the next one the exchange's words over one line's time (several
    times the true rate: TensorBoard kept those)."""
    got, records = scalars(two_ranks), metrics(two_ranks)
    assert set(got) == TAGS | {"sync/bytes_per_rank", "ranks/words_per_s/rank_0", "ranks/words_per_s/rank_1"}
    assert [e.step for e in got["ranks/words_per_s/rank_1"]] == [e.step for e in got["train/lr"]]
    assert records[-1]["sync_bytes"] > 0
    assert got["sync/bytes_per_rank"][-1].value == pytest.approx(records[-1]["sync_bytes"], rel=1e-6)
    advanced = [r for before, r in zip([{"words": 0}] + records, records) if r["words"] != before["words"]]
    times = np.diff([0.0] + [r["time"] for r in advanced])
    per_rank = (np.array([r["rank_words_per_s"] for r in advanced]) * times[:, None]).sum(axis=0)
    assert (per_rank > 0).all()
    total = json.loads((two_ranks / "summary.json").read_text())["words"]
    assert per_rank.sum() == pytest.approx(total, rel=0.02)
    rates = np.array([r["words_per_s"] for r in advanced])
    assert (rates * times).sum() == pytest.approx(total, rel=0.02)


def test_lines_between_exchanges_keep_the_rate(plain_corpus, tmp_path):
    """2 ranks logging every step (--log-every 0), exchanging words every few steps: a line between two
    exchanges carries the rate of the last span, and the rates are of the spans between the
    exchanges. Guards: 0 words/s on most lines and the exchange's words over one line's time on
    the next (several times the run's rate; TensorBoard plotted those)."""
    from tests.test_distributed import torchrun

    run = tmp_path / "r"
    torchrun("train", str(plain_corpus), "--output", str(run), "--epochs", "1", "--dim", "8", "--min-count", "3",
             "--threads", "1", "--workers", "0", "--batch-words", "500", "--sync-every", "4", "--log-every", "0")
    records = metrics(run)
    advanced = [r for before, r in zip([{"words": 0}] + records, records) if r["words"] != before["words"]]
    assert 2 < len(advanced) < len(records), (len(advanced), len(records))
    assert all(r["words_per_s"] > 0 for r in records if r["words"] > 0)
    times = np.diff([0.0] + [r["time"] for r in advanced])
    total = json.loads((run / "summary.json").read_text())["words"]
    assert (np.array([r["words_per_s"] for r in advanced]) * times).sum() == pytest.approx(total, rel=0.02)
    board = [e.value for e in scalars(run)["train/words_per_s"]]
    assert board == pytest.approx([r["words_per_s"] for r in advanced], rel=1e-6)


def test_without_tensorboard_training_runs_and_says_so_once(plain_corpus, tmp_path):
    """Guards: the viz extra becoming a requirement of training, or a message per interval."""
    shadow = tmp_path / "shadow" / "tensorboard"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('tensorboard hidden by the test')\n")
    path = os.pathsep.join([str(shadow.parent), os.environ.get("PYTHONPATH", "")])
    run = tmp_path / "r"
    p = cli("train", str(plain_corpus), "--output", str(run), "--epochs", "1", "--dim", "8", "--min-count", "3",
            "--threads", "1", "--batch-words", "1000", "--log-every", "0", env={"PYTHONPATH": path})
    assert (run / "summary.json").exists() and not (run / "tensorboard").exists()
    assert p.stderr.count("no TensorBoard curves") == 1 and "pip install 'w2v-dist[viz]'" in p.stderr


def test_a_run_on_an_object_store_gets_its_event_file(tmp_path):
    """Guards: event files left in the local staging directory when the run is not on local disk
    (SummaryWriter itself writes local paths only)."""
    from w2v_dist import storage
    from w2v_dist.tensorboard import Board

    board = Board("memory://tensorboard-test/run", purge_step=1)
    for words, lr in ((100, 0.02), (200, 0.01), (200, 0.01), (300, 0.005)):  # 200 twice: one point
        board.write({"words": words, "loss": 4.0, "examples": 10, "lr": lr, "words_per_s": 1e5, "progress": 0.5,
                     "epoch": 0})
    board.close()
    (name,) = storage.expand("memory://tensorboard-test/run/tensorboard", ("",))
    (tmp_path / name.rsplit("/", 1)[1]).write_bytes(storage.read_bytes(name))
    acc = EventAccumulator(str(tmp_path), size_guidance={"scalars": 0})
    acc.Reload()
    assert [(e.step, e.value) for e in acc.Scalars("train/lr")] == [(100, np.float32(0.02)), (200, np.float32(0.01)),
                                                                     (300, np.float32(0.005))]


def test_a_killed_run_s_staging_directory_is_swept_by_the_next(tmp_path, monkeypatch):
    """Guards: every SIGKILLed run left its /tmp/w2v_dist-tensorboard-* behind (348 on a machine
    that ran the tests), since nothing of the killed process could remove it."""
    import subprocess
    import sys
    import tempfile

    from w2v_dist.tensorboard import STAGING_PREFIX, Board

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = tmp_path / f"{STAGING_PREFIX}{gone.stdout.strip()}-abc"
    alive = tmp_path / f"{STAGING_PREFIX}{os.getppid()}-def"  # a live process's (pytest's parent)
    for d in (dead, alive):
        d.mkdir()
    board = Board(str(tmp_path / "run"))
    assert not dead.exists() and alive.exists()
    board.close()
    assert not any(p.name.startswith(f"{STAGING_PREFIX}{os.getpid()}-") for p in tmp_path.iterdir())
