"""The run directory as others see it: file modes, one writer at a time, no orphan ranks."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import ROOT, cli
from w2v_dist.progress import FINAL_LOSS_WORDS, Progress

TINY = ["--dim", "8", "--epochs", "1", "--threads", "1", "--min-count", "3"]


def _modes(root) -> dict[str, int]:
    return {str(p.relative_to(root)): stat.S_IMODE(p.stat().st_mode) for p in [root, *root.rglob("*")]}


@pytest.fixture(scope="module")
def tiny_run(plain_corpus, tmp_path_factory):
    """One process, one epoch, a checkpoint and a metrics record every step, under umask 022."""
    run = tmp_path_factory.mktemp("tiny") / "run"
    old = os.umask(0o022)
    try:
        cli("train", str(plain_corpus), "--output", str(run), *TINY, "--checkpoint-every", "1", "--log-every", "0")
    finally:
        os.umask(old)
    return run


def test_files_follow_the_umask(tiny_run, tmp_path):
    """Guards: every file written through the atomic write was 0600 whatever the umask (mkstemp's
    mode leaked through), so other users and jobs of a shared cluster could not read the vectors."""
    run = tiny_run
    modes = _modes(run)
    for name in ("vectors.npy", "summary.json", "config.json", "plan.json", "metrics.jsonl", "vocab/counts.npy",
                 "vocab/vocab.json"):
        assert modes.pop(name) == 0o644, name
    assert any(n.startswith("checkpoints/step-") for n in modes)
    assert {m for n, m in modes.items() if (run / n).is_file()} == {0o644}, modes  # checkpoints too
    assert {m for n, m in modes.items() if (run / n).is_dir()} == {0o755}, modes
    old = os.umask(0o027)  # not a fixed 0644 either: the umask decides
    try:
        p = cli("export", str(run), "--format", "npy", "--output", str(tmp_path / "v.npy"))
    finally:
        os.umask(old)
    assert [stat.S_IMODE(os.stat(f).st_mode) for f in p.stdout.split()] == [0o640, 0o640]


def test_final_loss_is_the_mean_over_the_last_words_not_the_last_log_interval(tiny_run):
    """Guards: summary.json's final_loss being the loss since the last log line (with --log-every 0
    that was the empty closing interval: 0.0), so it moved with the logging. The oracle: the
    metrics records (one per step here), weighted by their examples, over the last
    FINAL_LOSS_WORDS words (the whole of this 40k-word run)."""
    summary = json.loads((tiny_run / "summary.json").read_text())
    records = [json.loads(line) for line in (tiny_run / "metrics.jsonl").read_text().splitlines()]
    assert FINAL_LOSS_WORDS > summary["words"] == records[-1]["words"] and len(records) > 10
    expected = sum(r["loss"] * r["examples"] for r in records) / sum(r["examples"] for r in records)
    assert summary["final_loss"] == pytest.approx(expected, rel=1e-9) and 1 < expected < 5
    assert summary["words_this_session"] == summary["words"]


def test_final_loss_window_holds_the_last_words():
    """The window's cut, which a test corpus smaller than FINAL_LOSS_WORDS never reaches: steps
    of 10 words, losses 1, 2, 3, ... per example; the last 25 words are the last 3 steps."""
    progress = Progress(1000, None, every_s=1e9, enabled=False, final_words=25)
    for i in range(1, 11):
        progress.update(10, 4, 4.0 * i, 0.1, i, 0)
    assert progress.final_loss() == pytest.approx((8 + 9 + 10) / 3)
    resumed = Progress(1000, None, every_s=1e9, enabled=False, final_words=25, words_done=100,
                       tail=[list(t) for t in progress.tail])  # as a checkpoint keeps it
    resumed.update(10, 4, 4.0 * 11, 0.1, 11, 0)
    assert resumed.final_loss() == pytest.approx((9 + 10 + 11) / 3)

def _ranks_of(agent: int) -> list[int]:
    """The w2v_dist processes whose parent is ``agent`` (from /proc: the oracle is the kernel)."""
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat_line = open(f"/proc/{d}/stat").read()
            cmdline = open(f"/proc/{d}/cmdline", "rb").read()
        except OSError:
            continue
        if int(stat_line.rsplit(")", 1)[1].split()[1]) == agent and b"w2v_dist" in cmdline:
            found.append(int(d))
    return found


def _alive(pid: int) -> bool:
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_live_run_owns_its_directory_and_dies_with_its_agent(tmp_path):
    """Guards: ranks living on as orphans, training and writing the run, once their torchrun agent
    is SIGKILLed (the OOM killer's choice); a second train writing into a live run's directory; a
    rank that gets no data said only with --log-all-ranks. One 2-rank run on a corpus of one row:
    rank 1 gets nothing (a row is never split), and 10^5 epochs keep the run alive until killed."""
    corpus = tmp_path / "c"
    corpus.mkdir()
    pq.write_table(pa.table({"text": [" ".join(f"w{i % 300}" for i in range(3000))]}), corpus / "part-00000.parquet")
    run = tmp_path / "run"
    args = ["train", str(corpus), "--output", str(run), "--dim", "8", "--threads", "1", "--min-count", "1",
            "--workers", "0", "--batch-words", "500", "--log-every", "0.2"]
    log_path = tmp_path / "torchrun.log"
    with open(log_path, "w") as log_file:
        agent = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
                                  "2", "-m", "w2v_dist", *args, "--epochs", "100000"], stdout=log_file,
                                 stderr=subprocess.STDOUT, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    ranks: list[int] = []
    try:
        deadline = time.monotonic() + 180
        while not (run / "metrics.jsonl").exists():  # both ranks are past their start: training
            assert agent.poll() is None and time.monotonic() < deadline, log_path.read_text()[-3000:]
            time.sleep(0.2)
        ranks = _ranks_of(agent.pid)
        owner = json.loads((run / ".lock").read_text())
        assert len(ranks) == 2 and owner["pid"] in ranks and owner["host"] == socket.gethostname(), (ranks, owner)

        p = cli(*args, "--epochs", "100000", check=False)
        assert p.returncode == 2 and p.stderr.count("\n") == 1, p.stderr
        assert p.stderr.startswith(f"w2v-dist: error: {run}: in use by another w2v-dist train (pid {owner['pid']} "
                                   f"on {owner['host']}, since {owner['started']})"), p.stderr

        os.kill(agent.pid, signal.SIGKILL)
        agent.wait()
        deadline = time.monotonic() + 10
        while any(map(_alive, ranks)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(map(_alive, ranks)), "ranks outlived their torchrun agent"
    finally:
        for pid in [*ranks, agent.pid]:  # on a failure: leave nothing training
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
    lines = log_path.read_text().splitlines()
    (idle,) = [line for line in lines if "no data" in line]
    assert "WARNING rank 1 gets no data: the corpus splits into 1 piece of work for 2 ranks" in idle, idle
    assert "Run fewer ranks" in idle and not any("rank done" in line for line in lines)  # not --log-all-ranks

    # its owner is gone: the lock is broken, with a word, and the relaunch goes on (to refuse a changed --dim)
    p = cli(*args, "--epochs", "100000", "--dim", "9", check=False)
    assert p.returncode == 2, p.stderr
    assert f"breaking the lock of a run that is gone (pid {owner['pid']} on {owner['host']}" in p.stderr
    assert "was started with other settings (dim: 8 -> 9)" in p.stderr.splitlines()[-1]
    assert not (run / ".lock").exists()
