"""Mutation check: break the product in one small way at a time and see whether the tests notice.

Each mutation is data (:class:`Mutation`): a file, an exact snippet of it, its replacement, and
the pytest selection that is meant to catch it. For each one, the repository (tracked and
untracked files, as `git ls-files` lists them) is copied into a scratch directory, the snippet is
replaced there, and the selection runs there with the copy first on ``PYTHONPATH`` (checked: the
copy's ``w2v_dist`` is the one imported). Every selection is first run on the unmutated copy: a
selection that fails or skips there proves nothing and is reported as such.

    python bench/mutations.py                  # all mutations: a markdown table on stdout
    python bench/mutations.py --list           # names and selections only
    python bench/mutations.py --only labels --only utf-8    # names containing either word
    python bench/mutations.py --no-baseline    # skip the unmutated runs (faster, less sure)

A mutation is "caught" when its selection fails (pytest exit code 1), "survived" when it passes;
anything else (a collection error, a run past ``--timeout``) is no verdict. The exit code is 0
only if every mutation was caught.
To guard a new claim, add a :class:`Mutation` to ``MUTATIONS``; the snippet must occur exactly
once in its file (checked before anything runs, so a stale snippet fails fast). One checker at a
time per ``--workdir``: the copy lives at a fixed path, so that numba's cache of the kernels
(``NUMBA_CACHE_DIR``, keyed by source path and mtime) is compiled once, not once per mutation.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutation:
    name: str  # what breaks, as a user would notice it
    file: str  # relative to the repository root
    original: str  # exact text, found exactly once in the file
    replacement: str
    tests: tuple[str, ...]  # pytest arguments: node ids, files, -k expressions


RESUME_BOUNDARY = "tests/test_resume.py::test_killed_then_rerun_equals_uninterrupted[at the epoch boundary]"
READER_WORKER = "tests/test_hostile.py::test_bad_shard_found_by_a_reader_worker_is_one_line"
EVERY_ROW = "tests/test_every_row.py::test_every_row_is_trained_once_per_epoch"

MUTATIONS = [
    Mutation(
        "export: two word labels swapped when a run directory is loaded",
        "w2v_dist/vectors.py",
        "        return cls(vocab.words.to_pylist(), vectors, np.asarray(vocab.counts))\n",
        "        words = vocab.words.to_pylist()\n"
        "        words[1], words[2] = words[2], words[1]\n"
        "        return cls(words, vectors, np.asarray(vocab.counts))\n",
        ("tests/test_export_labels.py",)),
    Mutation(
        "export: text floats written with 6 decimals (word2vec.c's %lf)",
        "w2v_dist/export.py",
        "    floats = pc.cast(pa.array(block.reshape(-1)), pa.string())\n",
        "    floats = pa.array([f\"{x:.6f}\" for x in block.reshape(-1).tolist()])\n",
        ("tests/test_export_labels.py::test_export_writes_each_word_with_its_own_vector[word2vec]",)),
    Mutation(
        "reader: one row of the corpus dropped (the first of shard 0)",
        "w2v_dist/corpus/dataset.py",
        "            column = read_row_group(self.file[1], shard, g)\n",
        "            column = read_row_group(self.file[1], shard, g)\n"
        "            column = column.slice(1) if (s, g) == (0, 0) else column\n",
        (EVERY_ROW,)),
    Mutation(
        "reader: the last row of every unit dropped",
        "w2v_dist/corpus/dataset.py",
        "return None if column is None else column.slice(unit.start, unit.stop - unit.start)\n",
        "return None if column is None else column.slice(unit.start, max(unit.stop - unit.start - 1, 0))\n",
        (EVERY_ROW,)),
    Mutation(
        "vocab: --min-count off by one",
        "w2v_dist/vocab.py",
        't = counts_table.filter(pc.greater_equal(counts_table["count"], min_count))\n',
        't = counts_table.filter(pc.greater(counts_table["count"], min_count))\n',
        ("tests/test_every_row.py::test_vocabulary_is_the_corpus_counts",)),
    Mutation(
        "distributed: data plan keyed by the local rank (two nodes read the same half)",
        "w2v_dist/training.py",
        "batch_words=cfg.batch_words, rank=dist.rank, world_size=dist.world_size,",
        "batch_words=cfg.batch_words, rank=dist.local_rank, world_size=dist.world_size,",
        ("tests/test_every_row.py::test_two_nodes_train_what_two_ranks_on_one_node_train",)),
    Mutation(
        "cli: an error raised in a reader worker is not unwrapped",
        "w2v_dist/cli.py",
        '        if msg.startswith("Caught ") and len(lines) > 1:  # re-raised from a DataLoader worker\n'
        '            msg = lines[-1].split(": ", 1)[-1]\n',
        "",
        (READER_WORKER,)),
    Mutation(
        "train: readers not stopped when one raises (the trainer never exits)",
        "w2v_dist/training.py",
        "            if stop is not None:\n"
        "                stop()\n",
        "            pass\n",
        (READER_WORKER,)),
    Mutation(
        "cli: a traceback printed above the one-line error",
        "w2v_dist/cli.py",
        '        print(f"w2v-dist: error: {msg}", file=sys.stderr)\n',
        "        import traceback\n"
        "        traceback.print_exc()\n"
        '        print(f"w2v-dist: error: {msg}", file=sys.stderr)\n',
        ("tests/test_hostile.py::test_corrupt_page",)),
    Mutation(
        "hostile: the bad-UTF-8 row count fixed at 1",
        "w2v_dist/corpus/dataset.py",
        "        bad = int((~ok).sum())\n",
        "        bad = 1\n",
        ("tests/test_hostile.py::test_non_utf8_rows_are_counted_one_by_one",)),
    Mutation(
        "resume: the chunk trained last before the checkpoint trained again",
        "w2v_dist/corpus/dataset.py",
        "if after is not None and [epoch, i, p] <= after:",
        "if after is not None and [epoch, i, p] < after:",
        (RESUME_BOUNDARY,)),
    Mutation(
        "reader: a row group cut into pieces fetched again for each piece (its text not kept)",
        "w2v_dist/corpus/dataset.py",
        "            self.held[key] = column",
        "            pass",
        ("tests/test_object_stores.py::test_an_epoch_fetches_the_corpus_once[s3]",)),
    Mutation(
        "reader: a file's footer fetched again at every open (footers not kept)",
        "w2v_dist/corpus/dataset.py",
        "            known = self.kept.get(s)\n            if known is not None:",
        "            known = None\n            if known is not None:",
        ("tests/test_object_stores.py::test_an_epoch_fetches_the_corpus_once[s3]",)),
    Mutation(
        "checkpoint: --checkpoint-minutes read as hours",
        "w2v_dist/training.py",
        "time.monotonic() - self.last >= 60 * self.minutes",
        "time.monotonic() - self.last >= 3600 * self.minutes",
        ("tests/test_resume.py::test_checkpoint_minutes_saves_on_the_clock",)),
    # the training step (issue 8) and the rank sync
    Mutation(
        "kernel: window sizes drawn in [0, window) instead of [1, window]",
        "w2v_dist/kernels/numba_cpu.py",
        "r = 1 + _below(z, window)",
        "r = _below(z, window)",
        ("tests/test_kernels.py::test_window_sizes_are_uniform_in_1_to_window",)),
    Mutation(
        "kernel: subsampling keeps a word with 1 - keep_prob",
        "w2v_dist/kernels/numba_cpu.py",
        "if _uniform(z) < keep[w]:",
        "if _uniform(z) >= keep[w]:",
        ("tests/test_kernels.py::test_subsampling_keeps_words_at_their_keep_probability",)),
    Mutation(
        "vocab: negatives drawn from unigram^1 instead of ^0.75",
        "w2v_dist/vocab.py",
        "NegativeSampler.build(counts.astype(np.float64) ** 0.75)",
        "NegativeSampler.build(counts.astype(np.float64) ** 1.0)",
        ("tests/test_kernels.py::test_negatives_follow_unigram_to_the_three_quarters",)),
    Mutation(
        "kernel: every one of a centre word's shared negatives taken as its first",
        "w2v_dist/kernels/numba_cpu.py",
        "target = np.int64(negs[nb + k - 1])",
        "target = np.int64(negs[nb])",
        ("tests/test_kernels.py::test_one_thread_is_word2vec_c_sequential_order",)),
    Mutation(
        "kernel: threads write shared rows in place (a race: not repeatable)",
        "w2v_dist/kernels/numba_cpu.py",
        "if u != t and marks[u, r] == tag:",
        "if False:",
        ("tests/test_kernels.py::test_threads_merge_their_slices_in_order",)),
    Mutation(
        "train: the divergence guard ignored (a blown-up run ends 'done')",
        "w2v_dist/training.py",
        "control.diverged = guard.update(loss, examples)",
        "control.diverged = 0 * guard.update(loss, examples)",
        ("tests/test_cli.py::test_divergence_stops_the_run",)),
    Mutation(
        "train: the learning-rate schedule runs over world_size x words",
        "w2v_dist/training.py",
        "schedule = LinearSchedule(cfg.alpha, cfg.min_alpha, cfg.epochs * vocab.total_words)",
        "schedule = LinearSchedule(cfg.alpha, cfg.min_alpha, cfg.epochs * vocab.total_words * dist.world_size)",
        ("tests/test_distributed.py::test_one_process_and_two_ranks_follow_one_schedule",)),
    Mutation(
        "sync: rowmean divides every row by the world size (a rare word's update halved)",
        "w2v_dist/sync.py",
        "summed[i] /= touched[i].clamp(min=1)",
        "summed[i] /= self.dist.world_size",
        ("tests/test_distributed.py::test_sync_combines_the_ranks_changes",)),
    Mutation(
        "train: a checkpoint taken while the ranks' tables differ",
        "w2v_dist/training.py",
        "if control.pending and synced:",
        "if control.pending:",
        ("tests/test_resume.py::test_checkpoints_wait_for_a_full_sync_and_resume_exactly",)),
    Mutation(
        "sync: the learning rate not scaled by the world size under mean (1/N of the progress)",
        "w2v_dist/sync.py",
        "(lr_scale or auto_lr_scale(dist.world_size, alpha)) if self.active",
        "1 if self.active",
        ("tests/test_distributed.py::test_mean_combine_trains_every_rank_at_n_times_the_rate[n-times-the-rate]",)),
    Mutation(
        "sync: mean divides by N where the capped multiplier is below it (CBOW at 8 ranks: rows move half their way)",
        "w2v_dist/sync.py",
        "summed[i] /= ranks or self.divisor",
        "summed[i] /= ranks or self.dist.world_size",
        ("tests/test_distributed.py::test_mean_combine_trains_every_rank_at_n_times_the_rate[multiplier-short-of-n]",)),
    Mutation(
        "train: two replicas by default above --alpha 0.1 (their average moves rows half their way)",
        "w2v_dist/training.py",
        "    if auto_lr_scale(2, cfg.alpha) < 2:",
        "    if False:",
        ("tests/test_cli.py::test_default_replicas_fall_back_to_one_table_where_two_do_not_fit",)),
    Mutation(
        "train: the wait for the reader's next chunk not counted (a run bound by its input says nothing)",
        "w2v_dist/training.py",
        "                self.wait_s += time.perf_counter() - t",
        "                pass",
        ("tests/test_object_stores.py::test_a_slow_store_is_said_as_the_training_waiting_for_data",)),
    Mutation(
        "sync: the mean combine's rate multiplier not capped (CBOW at 8 ranks diverges)",
        "w2v_dist/sync.py",
        "min(world_size, int(MAX_RANK_ALPHA / alpha + 1e-9))",
        "world_size",
        ("tests/test_distributed.py::test_mean_scales_the_rate_by_the_ranks_up_to_a_rate_of_0_2",)),
    Mutation(
        "cli: every rank prints an error that every rank raised alike (a bad flag, a divergence)",
        "w2v_dist/cli.py",
        "if world > 1 and getattr(e, \"every_rank\", False):",
        "if False:",
        ("tests/test_distributed.py::test_divergence_is_said_once_naming_the_rank",
         "tests/test_distributed.py::test_an_error_is_said_once_and_a_rank_s_own_names_the_rank")),
    Mutation(
        "sync: --sync step syncs only a prefix of the rows",
        "w2v_dist/sync.py",
        "every, rows, combine, overlap, node_every, dtype = 1, 1 << 62, \"sum\", False, 0, \"float32\"",
        "every, rows, combine, overlap, node_every, dtype = 1, 8, \"sum\", False, 0, \"float32\"",
        ("tests/test_distributed.py::test_sync_step_is_the_sum_of_the_ranks_steps",)),
    Mutation(
        "token cache: a rewritten shard served from the cache",
        "w2v_dist/corpus/cache.py",
        'name = f"{shard.uri}|{shard.footer}',
        'name = f"{shard.uri}|',
        ("tests/test_hostile.py::test_a_rewritten_shard_is_not_served_from_the_token_cache",)),
    # seeing a run (issue 13)
    Mutation(
        "viz: TensorBoard points at the step number, not the words trained",
        "w2v_dist/tensorboard.py",
        '        step = int(rec["words"])\n',
        '        step = int(rec["step"])\n',
        ("tests/test_tensorboard.py::test_a_point_per_logged_interval",)),
    Mutation(
        "viz: a resumed run's TensorBoard writer keeps what the killed attempt logged past its checkpoint",
        "w2v_dist/tensorboard.py",
        "SummaryWriter(self._staging.name, purge_step=purge_step)",
        "SummaryWriter(self._staging.name)",
        ("tests/test_tensorboard.py::test_resumed_run_continues_the_curves",)),
    Mutation(
        "viz: every rank's words counted in rank 0's slot of the exchange",
        "w2v_dist/distributed.py",
        "        mine[dist.rank] = lock.words\n",
        "        mine[0] = lock.words\n",
        ("tests/test_tensorboard.py::test_two_ranks_add_per_rank_rates_and_sync_bytes",)),
    Mutation(
        "viz: map labels placed without looking at the labels placed before",
        "w2v_dist/plot.py",
        "            if inside and not covers and not any(box.overlaps(b) for b in placed):\n",
        "            if inside and not covers:\n",
        ("tests/test_plot.py::test_map_labels_do_not_overlap",)),
    Mutation(
        "viz: projector vectors.tsv a row ahead of metadata.tsv",
        "w2v_dist/export.py",
        '            rows = _float_rows(vectors[start:start + _BLOCK_ROWS], "\\t").to_pylist()\n',
        '            rows = _float_rows(vectors[start + 1:start + 1 + _BLOCK_ROWS], "\\t").to_pylist()\n',
        ("tests/test_export.py::test_projector_files_round_trip_a_run",)),
    Mutation(
        "checkpoints: an epoch's start syncs no table (its end is no point to checkpoint at)",
        "w2v_dist/training.py",
        "synced = sync.after_step(step, full=bool(flags[2]))",
        "synced = sync.after_step(step, full=False)",
        ("tests/test_resume.py::test_an_epoch_s_end_is_a_point_to_checkpoint_at",)),
    Mutation(
        "resume: the shards' footers not compared (a rewritten shard trained on)",
        "w2v_dist/training.py",
        '(p["uri"], p["num_rows"], p.get("footer") or s.footer) == (s.uri, s.num_rows, s.footer)',
        '(p["uri"], p["num_rows"]) == (s.uri, s.num_rows)',
        ("tests/test_resume.py::test_a_shard_rewritten_between_attempts_is_refused",)),
    Mutation(
        "reader: a file that is not the one listed read anyway",
        "w2v_dist/corpus/dataset.py",
        "if shard.footer and footer_hash(pf.metadata) != shard.footer:",
        "if False:",
        ("tests/test_corpus_stream.py::test_a_shard_that_is_not_the_listed_file_is_bad_data_never_trained_on",)),
    Mutation(
        "distributed: ranks started with different settings not compared",
        "w2v_dist/training.py",
        "    if odd:\n",
        "    if False:\n",
        ("tests/test_distributed.py::test_ranks_started_with_different_settings_are_refused_naming_them",)),
]


def check_snippets(mutations: list[Mutation]) -> None:
    for m in mutations:
        n = (ROOT / m.file).read_text(encoding="utf-8").count(m.original)
        if n != 1:
            raise SystemExit(f"{m.name}: the snippet occurs {n} times in {m.file}, not once; "
                             "the code changed: update the mutation in bench/mutations.py")


def fresh_copy(workdir: Path) -> Path:
    """The repository's files (tracked and untracked, not ignored) at ``workdir/repo``, mtimes kept,
    beside a link to the shared data directory the tests read (``../shared`` of the repository)."""
    repo = workdir / "repo"
    if repo.exists():
        shutil.rmtree(repo)
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.split("\0")
    for name in filter(None, listed):
        src = ROOT / name
        if src.is_file():  # a tracked file deleted in the working tree is left out
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, repo / name)
    shared = workdir / "shared"
    if not shared.exists() and (ROOT.parent / "shared").exists():
        shared.symlink_to(ROOT.parent / "shared")
    return repo


def environment(repo: Path, workdir: Path) -> dict:
    return {**os.environ, "PYTHONPATH": str(repo), "PYTHONDONTWRITEBYTECODE": "1",
            "NUMBA_CACHE_DIR": str(workdir / "numba-cache")}


def check_imports_copy(repo: Path, env: dict) -> None:
    imported = subprocess.run([sys.executable, "-c", "import w2v_dist; print(w2v_dist.__file__)"], cwd=repo, env=env,
                              capture_output=True, text=True, check=True).stdout.strip()
    if not Path(imported).resolve().is_relative_to(repo.resolve()):
        raise SystemExit(f"the copy in {repo} imports w2v_dist from {imported}; its tests would test the original")


def run_pytest(tests: tuple[str, ...], repo: Path, env: dict, timeout: float) -> tuple[str, str, str, float]:
    """(outcome, pytest's summary line, the first failure's short reason, seconds); outcome:
    passed | skipped | failed | timeout | error N."""
    t0 = time.perf_counter()
    try:
        # one process (-n 0): -x stops at the first failure, and a selection is a few tests
        p = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-rfEs", "-p", "no:cacheprovider", "-n", "0",
                            *tests],
                           cwd=repo, env={**env, "COLUMNS": "400"}, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timeout", f"over {timeout:.0f}s", "", time.perf_counter() - t0
    seconds = time.perf_counter() - t0
    lines = [line for line in p.stdout.strip().splitlines() if line.strip()]
    summary = re.sub(r"\s+in [\d.]+s.*$", "", lines[-1].strip("= ")) if lines else ""
    failed = next((line for line in lines if line.startswith(("FAILED ", "ERROR "))), "")
    reason = failed.split(" - ", 1)[1] if " - " in failed else failed
    outcome = {0: "passed", 1: "failed"}.get(p.returncode, f"error {p.returncode}")
    if outcome == "passed" and "skipped" in summary:
        outcome = "skipped"
    return outcome, summary, reason, seconds


def mutate(repo: Path, m: Mutation) -> None:
    path = repo / m.file
    text = path.read_text(encoding="utf-8")
    assert text.count(m.original) == 1, m.name
    path.write_text(text.replace(m.original, m.replacement), encoding="utf-8")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", action="append", default=[], help="run mutations whose name contains this (repeatable)")
    p.add_argument("--list", action="store_true", help="list the mutations and their tests, run nothing")
    p.add_argument("--no-baseline", action="store_true", help="do not run each selection on the unmutated copy first")
    p.add_argument("--timeout", type=float, default=900, help="seconds per pytest run (default: %(default)s)")
    p.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "w2v_dist-mutations"),
                   help="scratch directory for the copy (default: %(default)s)")
    p.add_argument("--out", default=None, help="also write the table to this file (e.g. bench/out/mutations.md)")
    a = p.parse_args()
    chosen = [m for m in MUTATIONS if not a.only or any(s.lower() in m.name.lower() for s in a.only)]
    if not chosen:
        raise SystemExit(f"no mutation matches {a.only}; see --list")
    check_snippets(chosen)
    if a.list:
        for m in chosen:
            print(f"{m.name}\n    {m.file}\n    {' '.join(m.tests)}")
        return
    workdir, t0 = Path(a.workdir), time.perf_counter()
    workdir.mkdir(parents=True, exist_ok=True)

    baseline: dict[tuple[str, ...], str] = {}
    if not a.no_baseline:
        repo = fresh_copy(workdir)
        env = environment(repo, workdir)
        check_imports_copy(repo, env)
        for tests in dict.fromkeys(m.tests for m in chosen):
            outcome, summary, _, seconds = run_pytest(tests, repo, env, a.timeout)
            baseline[tests] = outcome
            print(f"baseline {outcome:8s} {seconds:6.1f}s  {' '.join(tests)}  ({summary})", file=sys.stderr, flush=True)

    rows = []
    for m in chosen:
        if baseline.get(m.tests, "passed") != "passed":
            rows.append((m, f"not run: the selection {baseline[m.tests]} unmutated", "", "", 0.0))
            continue
        repo = fresh_copy(workdir)
        env = environment(repo, workdir)
        check_imports_copy(repo, env)
        mutate(repo, m)
        outcome, summary, reason, seconds = run_pytest(m.tests, repo, env, a.timeout)
        # a hang is left to the tests' own timeouts (pytest-timeout, subprocess limits): running
        # past --timeout is no verdict
        result = {"failed": "caught", "passed": "**survived**"}.get(outcome, f"no verdict: {outcome}")
        rows.append((m, result, summary, reason, seconds))
        print(f"{result:16s} {seconds:6.1f}s  {m.name}  ({summary})\n{'':24s}{reason}", file=sys.stderr, flush=True)
    shutil.rmtree(workdir / "repo", ignore_errors=True)

    table = ["| mutation | tests run | result | first failure | seconds |", "|---|---|---|---|---|"]
    for m, result, summary, reason, seconds in rows:
        tests = " ".join(f"`{t}`" for t in m.tests) + (f" ({summary})" if summary else "")
        reason = reason.replace("|", "\\|")
        reason = reason if len(reason) <= 90 else reason[:87] + "..."
        table.append(f"| {m.name} (`{m.file}`) | {tests} | {result} | {reason} | {seconds:.0f} |")
    caught = sum(r[1] == "caught" for r in rows)
    unmutated = "not run" if a.no_baseline else "all passed" if set(baseline.values()) == {"passed"} else str(baseline)
    table.append(f"\n{caught} of {len(rows)} caught; {time.perf_counter() - t0:.0f}s in all "
                 f"(the selections run unmutated first: {unmutated}).")
    text = "\n".join(table)
    print(text)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(text + "\n")
    if caught != len(rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
