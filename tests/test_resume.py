"""Never lose a run: exact resume, killed ranks, atomic checkpoints, signals (CPU, gloo)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import ROOT, cli, gcide_lines, write_shards
from tests.test_distributed import torchrun

# small steps and a checkpoint every 5 of them: many steps per epoch, kills land mid-epoch; the
# ranks sync every row every step, so a checkpoint is written at exactly every 5th step
SYNC_EVERY_STEP = ["--sync-every", "1", "--sync-rows", "8192"]
TRAIN = ["--epochs", "2", "--dim", "16", "--min-count", "3", "--log-every", "0.2", "--workers", "1",
         "--threads", "1", "--batch-words", "1000", "--checkpoint-every", "5", *SYNC_EVERY_STEP]


def _final(run):
    summary = json.loads((run / "summary.json").read_text())
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return np.load(run / "vectors.npy"), summary, metrics


def _steps_per_epoch(run) -> int:
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return max(m["step"] for m in metrics if m["epoch"] == 0)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """8k lines of gcide (about 60k words, 2 shards): 2 ranks take about 30 steps of 2 x 1,000
    words an epoch, room for the kills below, and the runs stay short (every one is 2 epochs with
    a checkpoint every 5 steps)."""
    return write_shards(tmp_path_factory.mktemp("resume-corpus"), gcide_lines(8_000))


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory):
    """Run A: 2 ranks, uninterrupted."""
    run = tmp_path_factory.mktemp("ref") / "a"
    torchrun("train", str(corpus), "--output", str(run), *TRAIN, "--log-every", "0")
    return run


def _same(a, b):
    va, sa, ma = _final(a)
    vb, sb, mb = _final(b)
    assert np.array_equal(va, vb), "vectors differ"
    assert (sa["words"], sa["steps"]) == (sb["words"], sb["steps"])
    assert ma[-1]["words"] == mb[-1]["words"] and ma[-1]["step"] == mb[-1]["step"]


@pytest.mark.parametrize("where", ["inside an epoch", "at the epoch boundary"])
def test_killed_then_rerun_equals_uninterrupted(reference, corpus, tmp_path, where):
    """Guards (at the epoch boundary): a resume from a checkpoint taken just as a chunk was used
    up, e.g. the trainer counting or training that chunk again.

    The boundary is rank 0's last step k of epoch 0 (the reference logs every step). A fault
    fires after a step's update and before its checkpoint, so rank 1 is killed in step k + 1,
    with a checkpoint every step: the rerun resumes from step k itself (killing in step k resumed
    from step k - 1, inside epoch 0, and no test held the boundary)."""
    run = tmp_path / "b"
    if where == "inside an epoch":
        kill, resumed, extra = 12, 10, []
    else:
        resumed = _steps_per_epoch(reference)
        kill, extra = resumed + 1, ["--checkpoint-every", "1"]
        epochs = {m["step"]: m["epoch"] for m in _final(reference)[2]}
        assert (epochs[resumed], epochs[resumed + 1]) == (0, 1)
    p = torchrun("train", str(corpus), "--output", str(run), *TRAIN, *extra, check=False,
                 env={"W2V_DIST_FAULT": f"kill@step:1:{kill}"})
    assert p.returncode != 0 and not (run / "summary.json").exists()
    p = torchrun("train", str(corpus), "--output", str(run), *TRAIN, *extra)
    assert f"resuming from {run}/checkpoints/step-{resumed} " in p.stderr, p.stderr[-3000:]
    _same(reference, run)


def test_rank_killed_under_max_restarts_recovers(reference, corpus, tmp_path):
    run = tmp_path / "b"
    p = torchrun("train", str(corpus), "--output", str(run), *TRAIN, extra=("--max-restarts", "1"),
                 env={"W2V_DIST_FAULT": "kill@step:1:13"})
    assert "resuming from" in p.stderr and "step-10" in p.stderr
    _same(reference, run)


def test_kill_between_payload_and_manifest_is_ignored(reference, corpus, tmp_path):
    run = tmp_path / "b"
    p = torchrun("train", str(corpus), "--output", str(run), *TRAIN, extra=("--max-restarts", "1"),
                 env={"W2V_DIST_FAULT": "kill@save:0:10"})
    assert "resuming from" in p.stderr and "step-5 " in p.stderr + " "
    _same(reference, run)


def test_corrupt_newest_checkpoint_falls_back(reference, corpus, tmp_path):
    run = tmp_path / "b"
    p = torchrun("train", str(corpus), "--output", str(run), *TRAIN, check=False,
                 env={"W2V_DIST_FAULT": "kill@step:0:17"})
    assert p.returncode != 0
    steps = sorted(int(d.name.split("-")[1]) for d in (run / "checkpoints").iterdir())
    assert steps == [10, 15]
    payload = run / "checkpoints" / "step-15" / "model.pt"
    payload.write_bytes(payload.read_bytes()[:-100])  # truncated
    p = torchrun("train", str(corpus), "--output", str(run), *TRAIN)
    assert "checkpoint step-15 is not usable" in p.stderr and "resuming from" in p.stderr
    assert "step-10" in p.stderr
    _same(reference, run)


def test_exhausted_restarts_fail_with_the_rank_traceback(corpus, tmp_path):
    p = torchrun("train", str(corpus), "--output", str(tmp_path / "b"), *TRAIN, extra=("--max-restarts", "0"),
                 env={"W2V_DIST_FAULT": "raise@step:1:3"}, check=False)
    assert p.returncode != 0
    assert "RuntimeError: injected fault at step 3 on rank 1" in p.stderr
    assert "Traceback" in p.stderr


def test_single_process_resume_is_exact(corpus, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    args = [*TRAIN, "--workers", "2"]
    cli("train", str(corpus), "--output", str(a), *args)
    p = cli("train", str(corpus), "--output", str(b), *args, check=False, env={"W2V_DIST_FAULT": "kill@step:0:23"})
    assert p.returncode == -signal.SIGKILL
    # the corpus spelt another way (relative to the command's directory): the same run (was refused as
    # "started with other settings (corpus: '/…/shards' -> '../…/shards')")
    p = cli("train", os.path.relpath(corpus, ROOT), "--output", str(b), *args)
    assert "resuming from" in p.stderr
    _same(a, b)
    # the resumed session's rate is its own words over its own time (was: all words over its time)
    before = int(p.stderr.split("resuming from ")[1].split("(")[1].split(" words done")[0])
    summary = json.loads((b / "summary.json").read_text())
    session = summary["words"] - before
    assert 0 < session == summary["words_this_session"] < summary["words"]
    assert summary["words_per_s"] == pytest.approx(session / summary["elapsed_s"], rel=1e-3)
    assert f"done: {summary['words']} words, {session} of them in this session: " in p.stderr, p.stderr


@pytest.mark.parametrize("fault", ["enospc@write:vectors.npy:0:0", "kill@write:summary.json:0:0"],
                         ids=["disk-full-at-vectors", "killed-at-summary"])
def test_a_run_whose_last_writes_failed_finishes_from_its_last_checkpoint(corpus, tmp_path, fault):
    """The disk fills (or the process is killed) at the run's last writes, after its final
    checkpoint: one line naming the file, then the same command writes the vectors and the
    summary from that checkpoint, the uninterrupted run's bits. Guards: a traceback (OSError,
    exit 1), then every rerun refused as "has trained 1.00 epochs' words already; resume with
    more epochs, or --overwrite", and export saying "not a finished run": the training lost."""
    a, b = tmp_path / "a", tmp_path / "b"
    args = [*TRAIN, "--workers", "0"]
    cli("train", str(corpus), "--output", str(a), *args)
    p = cli("train", str(corpus), "--output", str(b), *args, check=False, env={"W2V_DIST_FAULT": fault})
    assert not (b / "summary.json").exists()
    if fault.startswith("enospc"):
        assert p.returncode == 2 and p.stderr.strip().splitlines()[-1] == (
            f"w2v-dist: error: {b / 'vectors.npy'}: could not be written (no space left on the device); free space "
            "(or make it writable), then run the same command: what was written before is intact"), p.stderr[-2000:]
    else:
        assert p.returncode == -signal.SIGKILL and (b / "vectors.npy").exists()
    p = cli("train", str(corpus), "--output", str(b), *args)
    assert "training was done, its vectors and summary were not written" in p.stderr, p.stderr[-2000:]
    assert "all trained before" in p.stderr
    _same(a, b)
    assert not list(b.glob(".tmp-*")) and not list(b.glob("*/.tmp-*"))


def test_a_full_disk_leaves_no_lock_and_a_damaged_token_cache_is_read_again(corpus, tmp_path):
    """Guards: an empty .lock left by a failed write, read as a live run's forever ("in use by
    another w2v-dist train (pid ? on ?)"); a damaged cached unit (a bad CRC, an empty file) a
    traceback in every later run until the cache was deleted."""
    from w2v_dist import owner

    run = tmp_path / "r"
    run.mkdir()
    with pytest.raises(TypeError):  # the lock's write fails (as it does on a full disk)
        owner._create(str(run / ".lock"), object(), None)  # (not text: the write raises)
    assert not (run / ".lock").exists()
    cache = tmp_path / "cache"
    args = [*TRAIN, "--workers", "0", "--cache-dir", str(cache)]
    cli("train", str(corpus), "--output", str(tmp_path / "a"), *args)
    files = sorted(cache.glob("tokens-*/*.npz"))
    assert len(files) > 2
    data = bytearray(files[0].read_bytes())
    data[len(data) // 2] ^= 0xFF  # a bit flip: the zip's CRC no longer holds
    files[0].write_bytes(bytes(data))
    files[1].write_bytes(b"")
    cli("train", str(corpus), "--output", str(tmp_path / "b"), *args)
    _same(tmp_path / "a", tmp_path / "b")


MOVE_AFTER_FIRST_CHECKPOINT = """
import os, sys
from w2v_dist import storage
from w2v_dist.cli import main

write, run, moved = storage.write_bytes, sys.argv[1], sys.argv[2]


def write_bytes(uri, data, so=None):  # the user moves the run directory once its first checkpoint is in
    write(uri, data, so)
    if uri.endswith("manifest.json") and not os.path.exists(moved):
        os.rename(run, moved)


storage.write_bytes = write_bytes
sys.exit(main(sys.argv[3:]))
"""


def test_a_run_directory_moved_while_training_is_said_and_resumes_at_its_new_place(corpus, tmp_path):
    """Guards: the next write made the directory anew, and the run ended "done" (exit 0) into a
    directory holding its last files but no vocabulary, unreadable by export, with no lock."""
    a, run, moved = tmp_path / "a", tmp_path / "r", tmp_path / "moved"
    args = [*TRAIN, "--workers", "0"]
    cli("train", str(corpus), "--output", str(a), *args)
    p = subprocess.run([sys.executable, "-c", MOVE_AFTER_FIRST_CHECKPOINT, str(run), str(moved), "train", str(corpus),
                        "--output", str(run), *args], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert p.returncode == 2, p.stderr[-3000:]
    assert p.stderr.strip().splitlines()[-1].startswith(
        f"w2v-dist: error: {run}: the run directory was removed or moved while this run trained"), p.stderr[-2000:]
    assert not (run / "summary.json").exists() and not (moved / "summary.json").exists()
    cli("train", str(corpus), "--output", str(moved), *args)  # the same command, at the new place
    _same(a, moved)


def test_a_damaged_run_directory_is_one_line_and_never_resumed_blind(corpus, tmp_path):
    """A killed run's directory, then damaged: each is one line and nothing trains. Guards: a cut
    plan.json or config.json (JSONDecodeError tracebacks), a cut vocabulary file ('mmap length is
    greater than file size'), and no config.json: the run started afresh beside the old
    checkpoints, which, numbered higher, were resumed from by the next attempt, silently."""
    import shutil

    killed = tmp_path / "killed"
    args = [*TRAIN, "--workers", "0"]
    p = cli("train", str(corpus), "--output", str(killed), *args, check=False, env={"W2V_DIST_FAULT": "kill@step:0:40"})
    assert p.returncode == -signal.SIGKILL
    for name, damage, says in [("plan.json", "cut", "plan.json: damaged ("),
                               ("config.json", "cut", "config.json: damaged ("),
                               ("vocab/counts.npy", "cut", "vocab/counts.npy: damaged ("),
                               ("config.json", "remove", "holds checkpoints but no config.json")]:
        run = tmp_path / f"{damage}-{name.replace('/', '-')}"
        shutil.copytree(killed, run)
        target = run / name
        if damage == "cut":
            target.write_bytes(target.read_bytes()[:len(target.read_bytes()) // 2])
        else:
            target.unlink()
        p = cli("train", str(corpus), "--output", str(run), *args, check=False)
        lines = p.stderr.strip().splitlines()
        assert p.returncode == 2 and "Traceback" not in p.stderr and says in lines[-1], (name, p.stderr[-2000:])
        assert not (run / "summary.json").exists()
    # the newest step's directory renamed to a higher number: not taken for the newest (it was)
    run = tmp_path / "renamed"
    shutil.copytree(killed, run)
    older, newest = sorted(int(c.name.split("-")[1]) for c in (run / "checkpoints").iterdir())[-2:]
    (run / "checkpoints" / f"step-{newest}").rename(run / "checkpoints" / "step-999")
    p = cli("train", str(corpus), "--output", str(run), *args)
    assert f"step-999/manifest.json: written for step {newest}, not 999: the directory was renamed" in p.stderr
    assert f"resuming from {run}/checkpoints/step-{older} " in p.stderr, p.stderr[-2000:]


def test_replicas_checkpoint_where_they_agree_and_resume_exactly(corpus, tmp_path):
    """``--replicas 2``: the replicas agree only at their averages (every --sync-every steps and at
    an epoch's start), so checkpoints wait for one, and a killed run rerun ends in the
    uninterrupted run's bits. Guards: a checkpoint of replica 0 alone between averages (the other
    replica's progress lost on resume), the other replica not given the checkpoint's tables."""
    a, b = tmp_path / "a", tmp_path / "b"
    args = ["--epochs", "2", "--dim", "16", "--min-count", "3", "--log-every", "0", "--workers", "1",
            "--batch-words", "1000", "--checkpoint-every", "5", "--replicas", "2", "--sync-every", "4"]
    cli("train", str(corpus), "--output", str(a), *args)
    p = cli("train", str(corpus), "--output", str(b), *args, check=False, env={"W2V_DIST_FAULT": "kill@step:0:18"})
    assert p.returncode == -signal.SIGKILL
    p = cli("train", str(corpus), "--output", str(b), *args)
    assert "checkpoints/step-16 (" in p.stderr, p.stderr  # asked at step 15, written at the average of 16
    assert "checkpoints: each waits for the next average of the replicas (every 4 steps here" in p.stderr, p.stderr
    _same(a, b)


def test_sigterm_checkpoints_and_says_how_to_resume(corpus, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    cli("train", str(corpus), "--output", str(a), *TRAIN)
    p = cli("train", str(corpus), "--output", str(b), *TRAIN, check=False, env={"W2V_DIST_FAULT": "term@step:0:7"})
    assert p.returncode == 128 + signal.SIGTERM, p.stderr
    assert "Run the same command to resume" in p.stderr
    stopped = int(p.stderr.split("stopped at step ")[1].split(";")[0])
    assert stopped in (7, 8)  # the signal lands during step 7; the next step boundary is where all ranks agree
    assert (b / "checkpoints" / f"step-{stopped}" / "manifest.json").exists()
    cli("train", str(corpus), "--output", str(b), *TRAIN)
    _same(a, b)


def test_changed_settings_are_refused_unless_forced(corpus, tmp_path):
    run = tmp_path / "b"
    cli("train", str(corpus), "--output", str(run), *TRAIN, check=False, env={"W2V_DIST_FAULT": "kill@step:0:8"})
    p = cli("train", str(corpus), "--output", str(run), *TRAIN, "--dim", "20", check=False)
    assert p.returncode == 2 and "was started with other settings (dim: 16 -> 20)" in p.stderr
    p = cli("train", str(corpus), "--output", str(run), *TRAIN, "--window", "3", "--force-resume")
    assert "resuming with changed settings (--force-resume): window: 5 -> 3" in p.stderr
    assert (run / "summary.json").exists()


def test_force_resume_cannot_change_what_the_checkpoint_is_built_on(corpus, tmp_path):
    """--force-resume takes changed settings, not those the vocabulary and the tables were made
    with, nor fewer epochs than are trained; what it takes is what the next attempt compares with.
    Guards: --dim 20 with it ending in a traceback (a tensor size mismatch), --min-count said to
    change and the old vocabulary trained on, --epochs 1 at 1.6 epochs ending at once with the
    rate never decayed, and a second resume with the same flags refused for the first one's change."""
    run = tmp_path / "b"
    p = cli("train", str(corpus), "--output", str(run), *TRAIN, check=False, env={"W2V_DIST_FAULT": "kill@step:0:80"})
    assert p.returncode == -signal.SIGKILL  # its last checkpoint: step 75, 1.4 epochs
    for flags, expect in ((["--dim", "20"], "dim: 16 -> 20 cannot change when a run resumes, not even with"),
                          (["--min-count", "2"], "min_count: 3 -> 2 cannot change when a run resumes"),
                          # was: offered --force-resume, which then refused (the data positions are per reader)
                          (["--workers", "2"], "was started with --workers 1; resume with the same"),
                          (["--epochs", "1"], "--epochs 1: checkpoint step-75 of")):
        p = cli("train", str(corpus), "--output", str(run), *TRAIN, *flags, "--force-resume", check=False)
        assert p.returncode == 2 and p.stderr.strip().splitlines()[-1].startswith(f"w2v-dist: error: {run}: {expect}"
                                                                                  if flags[0] != "--epochs" else
                                                                                  f"w2v-dist: error: {expect}"), p.stderr
    p = cli("train", str(corpus), "--output", str(run), *TRAIN, "--window", "3", "--force-resume", check=False,
            env={"W2V_DIST_FAULT": "kill@step:0:90"})
    assert "resuming with changed settings (--force-resume): window: 5 -> 3" in p.stderr
    p = cli("train", str(corpus), "--output", str(run), *TRAIN, "--window", "3")  # no longer a change
    assert "resuming from" in p.stderr and "changed settings" not in p.stderr


def test_resuming_with_another_number_of_replicas_is_said(corpus, tmp_path):
    """--replicas 0 and --threads 0 resolve by the machine's cores, so a resumed run can resolve to
    another layout of the kernel than its checkpoint trained. Guards: a run of 2 replicas resumed
    with --threads 1 (one table) silently, off the uninterrupted run's bits, while --replicas 2,
    the same layout, was refused as a changed setting (replicas: 0 -> 2)."""
    run, args = tmp_path / "b", [*TRAIN, "--replicas", "2", "--threads", "0"]
    p = cli("train", str(corpus), "--output", str(run), *args, check=False, env={"W2V_DIST_FAULT": "kill@step:0:40"})
    assert p.returncode == -signal.SIGKILL
    one_table = [*TRAIN, "--replicas", "0", "--threads", "1"]
    p = cli("train", str(corpus), "--output", str(run), *one_table, check=False)
    assert p.returncode == 2 and p.stderr.strip().splitlines()[-1] == (
        f"w2v-dist: error: {run}: checkpoint step-35 trained 2 replica(s) of the tables, this command 1 (--replicas "
        "0, --threads 1); resume with --replicas 2, or --force-resume to go on with these"), p.stderr
    p = cli("train", str(corpus), "--output", str(run), *one_table, "--force-resume")
    assert "resuming with 1 replica(s) and 1 kernel thread(s) where checkpoint step-35 trained 2 and 2" in p.stderr
    # the reverse: a run whose --replicas 0 chose one table, resumed with --replicas 1, resumes
    run = tmp_path / "c"
    p = cli("train", str(corpus), "--output", str(run), *one_table, check=False, env={"W2V_DIST_FAULT": "kill@step:0:40"})
    assert p.returncode == -signal.SIGKILL
    p = cli("train", str(corpus), "--output", str(run), *TRAIN, "--replicas", "1", "--threads", "1")
    assert "resuming from" in p.stderr and "replica" not in p.stderr.split("resuming from")[1].split("\n")[0]


def test_a_shard_rewritten_between_attempts_is_refused(tmp_path):
    """The same file names and row counts, other words in one shard: resuming would train the
    rest of the run on data the vocabulary and the plan were not made from. Guards: comparing
    only names and row counts (which this rewrite keeps), as the resume did."""
    corpus = write_shards(tmp_path / "c", gcide_lines(6_000))
    run = tmp_path / "r"
    p = cli("train", str(corpus), "--output", str(run), *TRAIN, check=False, env={"W2V_DIST_FAULT": "kill@step:0:12"})
    assert p.returncode == -signal.SIGKILL
    victim = corpus / "part-00001.parquet"
    rows = [line[::-1] for line in gcide_lines(6_000)[3_000:]]  # the same rows, reversed
    write_shards(tmp_path / "rewritten", [*gcide_lines(3_000), *rows])
    victim.write_bytes((tmp_path / "rewritten" / "part-00001.parquet").read_bytes())
    p = cli("train", str(corpus), "--output", str(run), *TRAIN, check=False)
    assert p.returncode == 2 and p.stderr.strip().splitlines()[-1] == (
        f"w2v-dist: error: {corpus}: the shards differ from those the run in {run} started with (files added, "
        "removed or rewritten); pass --overwrite to start again"), p.stderr[-2000:]


def test_keep_checkpoints_refuses_one(corpus, tmp_path):
    p = cli("train", str(corpus), "--output", str(tmp_path / "r"), "--keep-checkpoints", "1", check=False)
    assert p.returncode == 2 and "--keep-checkpoints must be >= 2" in p.stderr


@pytest.mark.parametrize("overlap", [False, True, "node"], ids=["", "overlap", "node"])
def test_checkpoints_wait_for_a_full_sync_and_resume_exactly(small_corpus, tmp_path, overlap):
    """With the local sync every 4 steps (a prefix of the rows, all rows every 8th sync here: 6.4k
    words), a checkpoint asked for at step 5 is written at the next full sync (step 32), so
    checkpointing does not change what the ranks compute: killed at step 40 and rerun, the run
    ends in the uninterrupted run's vectors. Guards: a checkpoint that forces its own sync (the
    result would depend on when checkpoints happen) or one taken while ranks' tables differ.
    With ``--sync-overlap`` the same holds (a full sync waits for the sync in flight and leaves
    the ranks equal), and the overlapped run's vectors are not the plain one's; its changes travel
    in bfloat16 (``--sync-dtype``), whose rounding every rank applies alike. With syncs within
    the node every 2 steps between them (``--sync-node-every``; one node here, so of both ranks)
    too: the resumed run restores the node's snapshot, or its first node sync would be wrong."""
    flag = {False: [], True: ["--sync-overlap", "--sync-dtype", "bfloat16"], "node": ["--sync-node-every", "2"]}[overlap]
    default_sync = [*TRAIN[:-len(SYNC_EVERY_STEP)], "--sync-every", "4", *flag]
    ref, run = tmp_path / "ref", tmp_path / "b"
    torchrun("train", str(small_corpus), "--output", str(ref), *default_sync, "--checkpoint-every", "1000")
    p = torchrun("train", str(small_corpus), "--output", str(run), *default_sync, check=False,
                 env={"W2V_DIST_FAULT": "kill@step:1:40"})
    assert p.returncode != 0
    assert sorted(int(c.name.split("-")[1]) for c in (run / "checkpoints").iterdir()) == [32]
    p = torchrun("train", str(small_corpus), "--output", str(run), *default_sync)
    assert "checkpoints/step-32" in p.stderr
    assert "checkpoints: each waits for the next sync of every row (every 32 steps here" in p.stderr, p.stderr
    _same(ref, run)
    if overlap:
        plain = tmp_path / "plain"
        torchrun("train", str(small_corpus), "--output", str(plain), *default_sync[:-len(flag)])
        assert not np.array_equal(np.load(plain / "vectors.npy"), np.load(run / "vectors.npy"))


def test_a_sigterm_to_torchrun_stops_every_rank_at_once(corpus, tmp_path):
    """A scheduler preempts the job: SIGTERM to torchrun itself, which passes it on to every rank
    and waits for them (30 s, then SIGKILL). The ranks checkpoint at the next full sync, rank 0
    says so once, and all exit, so the same command resumes into the uninterrupted run's vectors.
    Guards: the other ranks waiting 30 s after the checkpoint for a second signal from torchrun
    that a torchrun shutting down never sends, until it SIGKILLed them ("Unable to shutdown
    process ... via 15, forcefully exiting via 9"): a preemption's grace period spent asleep."""
    args = [*TRAIN[:-len(SYNC_EVERY_STEP)], "--sync-every", "4", "--log-every", "0"]
    ref, run = tmp_path / "ref", tmp_path / "b"
    torchrun("train", str(corpus), "--output", str(ref), *args)
    p = torchrun("train", str(corpus), "--output", str(run), *args, check=False,
                 env={"W2V_DIST_FAULT": "term-launcher@step:0:5"})
    assert p.returncode != 0 and not (run / "summary.json").exists(), p.stderr[-3000:]
    assert "forcefully exiting" not in p.stderr, p.stderr[-3000:]
    said = [line for line in p.stderr.splitlines() if line.startswith("w2v-dist: stopped at step ")]
    assert len(said) == 1, p.stderr[-3000:]
    stopped = int(said[0].split("stopped at step ")[1].split(";")[0])
    assert sorted(int(c.name.split("-")[1]) for c in (run / "checkpoints").iterdir()) == [stopped]
    torchrun("train", str(corpus), "--output", str(run), *args)
    _same(ref, run)


def test_checkpoint_minutes_saves_on_the_clock(small_corpus, tmp_path):
    """Guards: --checkpoint-minutes ignored, or its minutes read in another unit (no test used it).

    0.0005 minutes is 30 ms. With every step's time in metrics.jsonl (--log-every 0) and every
    checkpoint kept, a run of a second or more has many time-based checkpoints, the first at least
    30 ms after the start and each next one at least 30 ms after the one before, and not much more
    (a step takes milliseconds; the first interval also holds the kernel's compilation)."""
    run, interval = tmp_path / "r", 0.0005 * 60
    cli("train", str(small_corpus), "--output", str(run), "--epochs", "1", "--dim", "16", "--min-count", "3",
        "--workers", "1", "--threads", "1", "--batch-words", "1000", "--log-every", "0",
        "--checkpoint-minutes", "0.0005", "--keep-checkpoints", "100000")
    _, summary, metrics = _final(run)
    seconds = {m["step"]: m["time"] for m in metrics}
    steps = sorted(int(d.name.split("-")[1]) for d in (run / "checkpoints").iterdir() if (d / "manifest.json").exists())
    assert steps[-1] == summary["steps"]  # the final one
    timed = [seconds[s] for s in steps if s != summary["steps"]]
    assert len(timed) >= 5, (steps, seconds[summary["steps"]])
    gaps = np.diff(timed)
    assert timed[0] > interval and gaps.min() > interval - 0.002 and gaps.max() < interval + 1.0, (timed, gaps)


def test_an_epoch_s_end_is_a_point_to_checkpoint_at(corpus, tmp_path):
    """A SIGTERM on 2 ranks is answered at the next full sync, and an epoch's end is one.

    ``--sync-rows 1`` makes the prefix syncs' whole-table turn (the 64th sync, step 256 at every 4
    steps) come after this 2-epoch run (about 60 steps) ends: only an epoch's end and the run's end
    sync every row. Guards: the full sync at an epoch's end taken before the step that follows it
    trains, so that the tables were never equal where a checkpoint is looked for (a SIGTERM in
    epoch 0 was noted, then the run trained on to its end and exited 0 with no checkpoint: a
    preempted machine would have lost the whole run). The stop is said once, by rank 0 (each
    rank said it, 2 lines each)."""
    args = [*TRAIN[:-len(SYNC_EVERY_STEP)], "--sync-every", "4", "--sync-rows", "1", "--checkpoint-every", "1000",
            "--log-every", "0"]
    ref, run = tmp_path / "ref", tmp_path / "b"
    torchrun("train", str(corpus), "--output", str(ref), *args)
    p = torchrun("train", str(corpus), "--output", str(run), *args, check=False,
                 env={"W2V_DIST_FAULT": "term@step:0:5"})
    assert p.returncode != 0 and not (run / "summary.json").exists(), p.stderr[-3000:]
    stopped = int(p.stderr.split("stopped by SIGTERM at step ")[1].split(";")[0])
    said = [line for line in p.stderr.splitlines() if "stopped" in line and "step" in line]
    assert len(said) == 2 and said[1] == (f"w2v-dist: stopped at step {stopped}; a checkpoint is in {run}. Run the "
                                          "same command to resume."), said  # rank 0's log line, its CLI line
    # the step after the first exchange of flags (every 4 steps) that follows a rank's first chunk
    # of epoch 1 (rank 0's, in the metrics, within a step or two of rank 1's)
    epochs = {m["step"]: m["epoch"] for m in _final(ref)[2]}
    first = min(s for s, e in epochs.items() if e == 1)
    assert abs(stopped - first) <= 4, (stopped, first)
    assert sorted(int(c.name.split("-")[1]) for c in (run / "checkpoints").iterdir()) == [stopped]
    p = torchrun("train", str(corpus), "--output", str(run), *args)
    assert f"checkpoints/step-{stopped}" in p.stderr
    _same(ref, run)
