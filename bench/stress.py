"""The stress set: train on corpora no default was tuned on, through the real CLI, next to gensim
on the same tokens, and show whether the loss spikes. Prints one markdown table and writes JSON.

    python bench/stress_corpora.py --apt                 # the Debian packages the real corpora need
    python bench/stress.py                               # every corpus, sg, README defaults, seed 1
    python bench/stress.py --only kjv repeat-paragraph --models sg cbow --seeds 1 2 3
    python bench/stress.py --max-words 200000 --epochs 1 # a small-scale check (minutes)
    python bench/stress.py --only kjv --extra-args='--batch-pairs 1024'   # extra flags for our train only
    python bench/stress.py --ranks 2 --threads 1 --no-gensim --extra-args='--workers 0'   # 2 torchrun ranks

For each corpus (built by bench/stress_corpora.py into ``--corpora`` when missing): ``w2v-dist
prepare`` the text, ``w2v-dist train`` it as a subprocess with the README defaults (``--model sg
--dim 100 --window 5 --negative 5 --sample 1e-3 --min-count 5 --epochs 5``), and train gensim
(``corpus_file`` mode) on exactly the tokens our tokenizer made of the same shards, with the same
hyper-parameters (alpha 0.025 sg / 0.05 cbow, min_alpha 1e-4, workers = our threads, or
``--threads`` workers against our ``--our-threads``: ``--our-threads 0`` is our default).

A run's loss series is the interval loss in ``<run>/metrics.jsonl`` (an interval every
``--log-every`` seconds). The run is flagged as a **spike** when its largest interval loss is more
than 1.5 times its first (or any interval loss is not finite): a step that is stable by
construction never climbs above where it started. A run that diverges and still exits 0 is
recorded like any other: that is what the table is for.

Analogy accuracy counts only the questions whose four words are in the vocabulary; with fewer
than 100 such questions the table shows n/a (the JSON keeps the number). A measure that needs no
questions, for corpora in other languages: **neighbour agreement**, the share of the 10 nearest
neighbours of the 1,000 most frequent words that two sets of vectors agree on (cosine, among the
10,000 most frequent words). The table gives ours against gensim's of the same seed, then
gensim's against gensim's of the previous seed and ours against ours likewise: two runs of one
trainer that differ only in the seed set the scale (with one seed, no scale). ``--extra-args`` go to
our ``train`` only: to change a hyper-parameter for both systems use its own option (``--sample``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import stress_corpora, w2v_dist_command  # noqa: E402
from bench.vs_gensim import evaluate, json_safe, run_gensim, write_tokens  # noqa: E402
from w2v_dist.vectors import Vectors  # noqa: E402

SPIKE = 1.5  # max interval loss / first interval loss above this is flagged
MIN_QUESTIONS = 100  # fewer answerable analogy questions than this: n/a


def sample_text(src: str, dst: str, total_words: int, max_words: int, block_words: int = 20_000) -> dict:
    """Copy about ``max_words`` words of ``src`` to ``dst`` as evenly spaced runs of whole lines
    (``block_words`` each, or one line where a line is longer), so that a small sample keeps the
    corpus's shape: a repetition in the middle stays in, in proportion, and so do runs of sorted
    lines."""
    n_blocks = max(1, math.ceil(max_words / block_words))
    starts = [i * total_words // n_blocks for i in range(n_blocks)]
    kept_words = kept_lines = seen = block = 0
    with open(src, encoding="utf-8") as f, open(dst, "w", encoding="utf-8") as out:
        for line in f:
            while block + 1 < n_blocks and seen >= starts[block + 1]:
                block += 1
            n = len(line.split())
            if starts[block] <= seen < starts[block] + block_words:
                out.write(line)
                kept_words += n
                kept_lines += 1
                if kept_words >= max_words:
                    break
            seen += n
    return {"words": kept_words, "lines": kept_lines, "blocks": n_blocks, "block_words": block_words}


def cli(*args: str, log: str, timeout: float | None = None, ranks: int = 1) -> tuple[int | str, float]:
    """Run ``python -m w2v_dist ARGS`` (the real CLI, a fresh process; with ``ranks`` > 1 under
    ``torchrun --standalone``), stdout and stderr to ``log``; returns (exit code or "timeout", wall
    seconds)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    t0 = time.perf_counter()
    with open(log, "w") as f:
        try:
            rc: int | str = subprocess.run([*w2v_dist_command(ranks), *args], stdout=f,
                                           stderr=subprocess.STDOUT, cwd=ROOT, env=env, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    return rc, time.perf_counter() - t0


def loss_series(run: str) -> dict:
    path = os.path.join(run, "metrics.jsonl")
    records = []
    if os.path.exists(path):
        with open(path) as f:
            records = [json.loads(line) for line in f if line.strip()]
    # an interval with no examples logs loss 0 (metrics.jsonl's convention; with several ranks
    # the last one, where rank 0 only hears the others' words): not a loss
    losses = [rec["loss"] for rec in records if rec.get("examples", 1) > 0] or [rec["loss"] for rec in records]
    if not losses:
        return {"intervals": 0, "spike": None, "flagged": None}
    if all(x == 0 for x in losses):  # the loss is a mean over examples: there were none (one-word lines)
        return {"intervals": len(losses), "no_examples": True, "spike": None, "flagged": False, "series": losses,
                "records": [{k: rec[k] for k in ("time", "step", "epoch", "words", "lr")} for rec in records]}
    finite = [x for x in losses if math.isfinite(x)]
    first, top = losses[0], max(finite) if finite else float("nan")
    spike = top / first if first > 0 and math.isfinite(first) else float("inf")
    nonfinite = len(losses) - len(finite)
    return {"intervals": len(losses), "first": first, "max": top, "last": losses[-1], "spike": spike,
            "nonfinite": nonfinite, "flagged": bool(nonfinite or not spike <= SPIKE), "series": losses,
            "records": [{k: rec[k] for k in ("time", "step", "epoch", "words", "lr")} for rec in records]}


AGREE_QUERIES, AGREE_POOL, AGREE_K = 1_000, 10_000, 10


def neighbour_agreement(a: Vectors | None, b: Vectors | None, queries: int = AGREE_QUERIES,
                        pool: int = AGREE_POOL, k: int = AGREE_K) -> float | None:
    """The mean share of the ``k`` nearest neighbours (cosine, among the ``pool`` most frequent
    words both know, in ``a``'s order) of the ``queries`` most frequent that ``a`` and ``b`` agree
    on; None without both, or with too few common words."""
    if a is None or b is None:
        return None
    words = [w for w in a.words[:2 * pool] if w in b][:pool]
    if len(words) <= k + 1:
        return None
    sets = []
    for v in (a, b):
        m = np.stack([v[w] for w in words]).astype(np.float64)
        m /= np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-12)
        sims = m[:queries] @ m.T
        np.fill_diagonal(sims, -np.inf)  # a word is not its own neighbour
        sets.append(np.argpartition(-sims, k, axis=1)[:, :k])
    return float(np.mean([len(set(x) & set(y)) / k for x, y in zip(*sets)]))


def _last_line(log: str) -> str:
    lines = [x for x in Path(log).read_text(errors="replace").splitlines() if x.strip()]
    return lines[-1] if lines else ""


def run_ours(shards: str, run: str, model: str, seed: int, tokens: int, a: argparse.Namespace) -> dict:
    args = [shards, "--output", run, "--model", model, "--dim", str(a.dim), "--window", str(a.window),
            "--negative", str(a.negative), "--sample", str(a.sample), "--min-count", str(a.min_count),
            "--epochs", str(a.epochs), "--seed", str(seed),
            "--threads", str(a.threads if a.our_threads is None else a.our_threads),
            "--log-every", str(a.log_every), "--overwrite"]
    if a.alpha is not None:
        args += ["--alpha", str(a.alpha)]
    args += shlex.split(a.extra_args)
    log = run + ".log"
    rc, seconds = cli("train", *args, log=log, timeout=a.timeout, ranks=a.ranks)
    r = {"exit": rc, "seconds": seconds, "words_per_s": tokens * a.epochs / seconds, "log": log,
         "loss": loss_series(run)}
    if rc != 0:
        r["error"] = _last_line(log)
    summary = os.path.join(run, "summary.json")
    series = r["loss"].get("records", [])
    if len(series) >= 2 and series[-1]["time"] > series[0]["time"]:
        # the first interval holds the kernel's JIT compile; after it, the loop's own rate, in raw
        # words (ours counts in-vocabulary words) to compare with gensim's
        in_vocab = (series[-1]["words"] - series[0]["words"]) / (series[-1]["time"] - series[0]["time"])
        r["train_loop_words_per_s"] = in_vocab * tokens * a.epochs / max(series[-1]["words"], 1)
    if os.path.exists(summary):
        s = json.loads(Path(summary).read_text())
        r["summary_words_per_s"] = s.get("words_per_s")
        r["steps"] = s.get("steps")
        r["vocab_size"] = s.get("vocab_size")
        try:
            vectors = Vectors.load(run)
            r["nonfinite_vectors"] = int((~np.isfinite(vectors.vectors)).any(axis=1).sum())
            r.update(evaluate(vectors))
            r["_vectors"] = vectors  # for neighbour_agreement; not written to the JSON
        except Exception as e:  # a diverged run's vectors are still evaluated if they load at all
            r["eval_error"] = f"{type(e).__name__}: {e}"
    return r


def run_theirs(tok_path: str, model: str, seed: int, a: argparse.Namespace) -> dict:
    ns = argparse.Namespace(**{**vars(a), "seed": seed})
    try:
        return run_gensim(tok_path, model, ns, corpus_file=True, keep_vectors=True)
    except Exception as e:
        return {"error": f"{type(e).__name__}: {e}"}


def run_corpus(name: str, a: argparse.Namespace, work: str) -> dict:
    record = stress_corpora.build(stress_corpora.BY_NAME[name], a.corpora, a.gcide)
    corpus_dir = os.path.join(work, name)
    os.makedirs(corpus_dir, exist_ok=True)
    text = stress_corpora.paths(a.corpora, name)[0]
    sample = None
    if a.max_words and record["words"] > a.max_words:
        sampled = os.path.join(corpus_dir, "sample.txt")
        sample = sample_text(text, sampled, record["words"], a.max_words,
                             block_words=max(20_000, record["max_words_per_line"]))
        text = sampled
    shards = os.path.join(corpus_dir, "shards")
    rc, _ = cli("prepare", text, "--output", shards, "--overwrite", log=os.path.join(corpus_dir, "prepare.log"))
    out = {"corpus": name, "stats": {k: v for k, v in record.items() if k != "notes"}, "sample": sample, "rows": []}
    if rc != 0:
        out["prepare_error"] = _last_line(os.path.join(corpus_dir, "prepare.log"))
        return out
    tok_path = os.path.join(corpus_dir, "tokens.txt")
    out["tokens"] = write_tokens(pq.read_table(shards, columns=["text"]).column("text").combine_chunks(), tok_path)
    for model in a.models:
        runs, before, mine_before = [], None, None  # the previous seed's vectors, gensim's and ours
        for seed in a.seeds:
            run = os.path.join(corpus_dir, f"run-{model}-{seed}")
            ours = run_ours(shards, run, model, seed, out["tokens"], a)
            theirs = run_theirs(tok_path, model, seed, a) if not a.no_gensim else {}
            mine, gensims = ours.pop("_vectors", None), theirs.pop("_vectors", None)
            ours["agree_gensim"] = neighbour_agreement(mine, gensims)
            ours["agree_prev_seed"] = neighbour_agreement(mine, mine_before)
            if theirs:
                theirs["agree_prev_seed"] = neighbour_agreement(gensims, before)
            before, mine_before = gensims, mine
            runs.append({"seed": seed, "w2v_dist": ours, "gensim": theirs})
            loss = ours["loss"]
            print(f"{name} {model} seed {seed}: exit {ours['exit']}, loss "
                  + (f"{loss['first']:.3f}/{loss['max']:.3f}/{loss['last']:.3f} ({loss['intervals']} intervals)"
                     if "first" in loss else "none")
                  + f", analogy {ours.get('analogy')} / gensim {theirs.get('analogy')}", file=sys.stderr, flush=True)
            if not a.keep:
                shutil.rmtree(run, ignore_errors=True)
        out["rows"].append({"model": model, "runs": runs})
    if not a.keep:
        for p in (shards, tok_path):
            shutil.rmtree(p, ignore_errors=True) if os.path.isdir(p) else os.remove(p)
    return out


# ---------------------------------------------------------------------------------------------
# The table


def _mean(runs: list[dict], who: str, key: str) -> float | None:
    xs = [r[who][key] for r in runs if isinstance(r[who].get(key), (int, float)) and math.isfinite(r[who][key])]
    return statistics.mean(xs) if xs else None


def _fmt(x: float | None, fmt: str = ".4f") -> str:
    return "—" if x is None else format(x, fmt)


def _pair(ours: float | None, theirs: float | None, fmt: str = ".4f") -> str:
    return f"{_fmt(ours, fmt)}/{_fmt(theirs, fmt)}"


def _g(x) -> str:
    """3 significant digits; NaN/inf survive a trip through the JSON (None / "inf")."""
    if x is None:
        return "nan"
    return format(float(x), ".3g")


def table_row(corpus: dict, row: dict) -> str:
    runs = row["runs"]
    # the seed whose loss climbed most speaks for the row; every seed is in the JSON
    worst = max(runs, key=lambda r: -1.0 if r["w2v_dist"]["loss"]["spike"] is None
                else float(r["w2v_dist"]["loss"]["spike"]))
    loss = worst["w2v_dist"]["loss"]
    if loss.get("no_examples"):
        losses, spike = "no examples (loss 0)", "—"
    elif loss["intervals"]:
        losses = f"{_g(loss['first'])}/{_g(loss['max'])}/{_g(loss['last'])}"
        spike = _g(loss["spike"]) + (" **SPIKE**" if loss["flagged"] else "")
    else:
        losses, spike = "no intervals", "—"
    exits = ",".join(sorted({str(r["w2v_dist"]["exit"]) for r in runs}))
    nonfinite = max(r["w2v_dist"].get("nonfinite_vectors", 0) for r in runs)
    if nonfinite:  # exited as it did, with vectors that are NaN/inf
        exits += f" ({nonfinite:,} non-finite vectors)"
    answered = min((r[w].get("analogy_answered", 0) for r in runs for w in ("w2v_dist", "gensim") if r[w]), default=0)
    if answered < MIN_QUESTIONS:
        analogy = f"n/a ({answered} q)"
    else:
        oov = _mean(runs, "w2v_dist", "analogy_oov")
        analogy = (f"{_pair(_mean(runs, 'w2v_dist', 'analogy'), _mean(runs, 'gensim', 'analogy'))} "
                   f"({answered} q, oov {oov:.0%})")
    ws_oov = _mean(runs, "w2v_dist", "ws353_oov")
    ws = _pair(_mean(runs, "w2v_dist", "ws353"), _mean(runs, "gensim", "ws353"), ".3f") + (
        f" (oov {ws_oov:.0%})" if ws_oov is not None else "")
    ours_s, theirs_s = (_mean(runs, who, "train_loop_words_per_s") for who in ("w2v_dist", "gensim"))
    speed = f"{ours_s / theirs_s:.2f}" if ours_s and theirs_s else "—"
    agree = "/".join(_fmt(_mean(runs, who, key), ".2f") for who, key in (
        ("w2v_dist", "agree_gensim"), ("gensim", "agree_prev_seed"), ("w2v_dist", "agree_prev_seed")))
    return (f"| {corpus['corpus']} | {corpus.get('tokens', 0):,} | {row['model']} | {losses} | {spike} | {exits} | "
            f"{analogy} | {ws} | {speed} | {agree} |")


def print_table(results: list[dict]) -> None:
    print("| corpus | tokens trained | model | w2v_dist loss first/max/last (the seed whose loss climbed most) | spike "
          "| exit | analogy w2v/gensim "
          "| WS-353 w2v/gensim | speed ratio (train loop, w2v/gensim) | neighbours w2v–gensim/gensim–gensim/w2v–w2v |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for c in results:
        if "prepare_error" in c:
            print(f"| {c['corpus']} | — | — | prepare failed: {c['prepare_error']} | | | | | | |")
        for row in c["rows"]:
            print(table_row(c, row))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--corpora", default=str(ROOT / "bench" / "out" / "stress-corpora"),
                   help="where bench/stress_corpora.py builds (and finds) the corpora (default: %(default)s)")
    p.add_argument("--only", nargs="+", metavar="NAME",
                   help=f"these corpora (default: all: {' '.join(stress_corpora.BY_NAME)})")
    p.add_argument("--gcide", default=str(stress_corpora.GCIDE), help="base of the adversarial corpora")
    p.add_argument("--max-words", type=int, default=None,
                   help="train on about this many words of each corpus (evenly spaced runs of lines): "
                        "a small-scale check")
    p.add_argument("--models", nargs="+", choices=("sg", "cbow"), default=["sg"])
    p.add_argument("--dim", type=int, default=100)
    p.add_argument("--window", type=int, default=5)
    p.add_argument("--negative", type=int, default=5)
    p.add_argument("--sample", type=float, default=1e-3)
    p.add_argument("--min-count", type=int, default=5)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--alpha", type=float, default=None, help="default: 0.025 sg, 0.05 cbow, for both systems")
    p.add_argument("--seeds", type=int, nargs="+", default=[1])
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="our kernel threads = gensim workers")
    p.add_argument("--our-threads", type=int, default=None,
                   help="our --threads, if not --threads (0: our default: two replicas on 2-4 cores, else the cores less one for the reader)")
    p.add_argument("--extra-args", default="",
                   help="more flags for our `train` only; write --extra-args='--batch-pairs 1024 --workers 2'")
    p.add_argument("--log-every", type=float, default=0.1,
                   help="seconds per loss interval in metrics.jsonl (default: %(default)s)")
    p.add_argument("--timeout", type=float, default=3600,
                   help="seconds before a train run counts as hung (default: %(default)s)")
    p.add_argument("--ranks", type=int, default=1,
                   help="train ours with torchrun, this many ranks of --threads kernel threads each "
                        "(gensim: --threads workers)")
    p.add_argument("--no-gensim", action="store_true", help="train only w2v_dist")
    p.add_argument("--workdir", default=None,
                   help="shards, tokens and runs (default: a temp dir, removed unless --keep)")
    p.add_argument("--keep", action="store_true", help="keep the shards, tokens files and run directories")
    p.add_argument("--json", default=str(ROOT / "bench" / "out" / "stress.json"))
    p.add_argument("--fail-on-spike", action="store_true",
                   help="exit 1 if any run spiked, exited non-zero or left non-finite vectors (for CI)")
    p.add_argument("--table", metavar="JSON", help="print the table of an earlier run's JSON, train nothing")
    a = p.parse_args(argv)
    if a.table:
        print_table(json.loads(Path(a.table).read_text())["results"])
        return 0

    names = a.only or list(stress_corpora.BY_NAME)
    unknown = [n for n in names if n not in stress_corpora.BY_NAME]
    if unknown:
        p.error(f"unknown corpus {', '.join(unknown)}; choose from {', '.join(stress_corpora.BY_NAME)}")
    # fail fast: a corpus that is neither built nor buildable stops the bench before any training
    problems = [msg for n in names if not os.path.exists(stress_corpora.paths(a.corpora, n)[1])
                if (msg := stress_corpora.check_sources(stress_corpora.BY_NAME[n], a.gcide))]
    if problems:
        print("error: " + "; ".join(problems), file=sys.stderr)
        return 2

    work = a.workdir or tempfile.mkdtemp(prefix="w2v-stress-")
    results = []
    try:
        for name in names:
            results.append(run_corpus(name, a, work))
    finally:
        if not a.keep and not a.workdir:
            shutil.rmtree(work, ignore_errors=True)

    print(f"\nd={a.dim} window={a.window} negative={a.negative} sample={a.sample} min_count={a.min_count} "
          f"epochs={a.epochs}; seeds {' '.join(map(str, a.seeds))}; {a.threads} threads"
          f"{f' (ours: --threads {a.our_threads})' if a.our_threads is not None else ''}"
          f"{f' x {a.ranks} ranks (torchrun)' if a.ranks > 1 else ''}"
          f"{f'; about {a.max_words:,} words of each corpus' if a.max_words else ''}"
          f"{f'; our train also got: {a.extra_args}' if a.extra_args else ''}; "
          f"{platform.processor() or platform.machine()}. Spike: max interval loss > {SPIKE}x the first. "
          f"Analogy n/a: fewer than {MIN_QUESTIONS} answerable questions. Speed ratio: raw words/s of the "
          f"training loops (ours after the first interval, which holds the JIT compile; gensim's total_train_time); "
          f"the JSON also has whole-process rates.\n")
    print_table(results)
    os.makedirs(os.path.dirname(a.json) or ".", exist_ok=True)
    with open(a.json, "w") as f:
        json.dump(json_safe({"args": vars(a), "spike_threshold": SPIKE, "results": results}), f, indent=2)
    bad = [f"{c['corpus']} {row['model']} seed {r['seed']}" for c in results for row in c["rows"] for r in row["runs"]
           if r["w2v_dist"]["loss"]["flagged"] or r["w2v_dist"]["exit"] != 0 or r["w2v_dist"].get("nonfinite_vectors")]
    bad += [f"{c['corpus']} (prepare)" for c in results if "prepare_error" in c]
    if bad:
        print(f"\n{len(bad)} unstable run(s): {', '.join(bad)}", file=sys.stderr)
    return 1 if bad and a.fail_on_spike else 0


if __name__ == "__main__":
    sys.exit(main())
