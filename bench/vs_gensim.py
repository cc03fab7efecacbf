"""w2v_dist against gensim on the same corpus, the same tokens, the same hyper-parameters, in
the same run. Prints one markdown table (seconds, words/s, their ratio, analogy accuracy and
WS-353 Spearman for each) and writes the numbers as JSON.

    python bench/vs_gensim.py                       # ../shared/data/gcide_en.txt.gz, sg and cbow, seeds 1 2 3
    python bench/vs_gensim.py --models sg --epochs 1 --lines 100000 --seeds 1   # a quick look
    python bench/vs_gensim.py --extra-args='--workers 1'                          # our flags on top
    python bench/vs_gensim.py --encoded              # also ours on the corpus `w2v-dist encode` wrote

Both are timed as whole commands, each in a fresh process: ``w2v-dist train`` on the Parquet
shards (imports, vocabulary pass, training, writing the run), and a Python process that imports
gensim and runs ``Word2Vec(corpus_file=...)`` (vocabulary pass and training) on the same tokens,
one line per row. Words/s = raw tokens x epochs / seconds for both. ``--encoded`` encodes the
shards once (timed apart) and trains ours on the result too, beside the text, with every seed.

One run's analogy accuracy moves by about half a point with the seed (for gensim as for us: ~7,800
answerable questions), so each system is trained with every seed and the table shows the means,
with the spread in the JSON.

Both are evaluated with w2v_dist.evaluate, whose numbers equal gensim's own
``evaluate_word_analogies`` / ``evaluate_word_pairs`` (tests/test_evaluate.py checks that).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import logging
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
from typing import Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from w2v_dist.config import TokenizerConfig  # noqa: E402
from w2v_dist.corpus.tokenize import tokenize  # noqa: E402
from w2v_dist.evaluate import evaluate_analogies, evaluate_similarity  # noqa: E402
from w2v_dist.prepare import read_text  # noqa: E402
from w2v_dist.vectors import Vectors  # noqa: E402

DATA = ROOT.parent / "shared" / "data"


def check_inputs(p: argparse.ArgumentParser, a: argparse.Namespace) -> None:
    """What would fail later, said before any work: a corpus that is not there, --lines below 1."""
    if not os.path.exists(a.corpus):
        p.error(f"--corpus {a.corpus}: no such file (the default is ../shared/data/gcide_en.txt.gz beside the "
                "repository)")
    if a.lines is not None and a.lines < 1:
        p.error(f"--lines must be >= 1, got {a.lines}")


def json_safe(x):
    """``x`` as strict JSON takes it: a score that is not finite (too few questions answered) as null."""
    if isinstance(x, float) and not math.isfinite(x):
        return None if math.isnan(x) else str(x)
    if isinstance(x, dict):
        return {k: json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    return x


def make_inputs(corpus: str, workdir: str, lines: int | None) -> tuple[str, str, int]:
    """Parquet shards for w2v_dist and the same tokens, space-joined, for gensim's LineSentence."""
    shards = os.path.join(workdir, "shards")
    os.makedirs(shards, exist_ok=True)
    tok_path = os.path.join(workdir, "tokens.txt")
    batches, n = [], 0
    for batch in read_text(corpus, "text", None, collections.defaultdict(int)):
        if lines is not None:
            batch = batch.slice(0, max(lines - n, 0))
        batches.append(batch)
        n += len(batch)
        if lines is not None and n >= lines:
            break
    text = pa.concat_arrays(batches)
    pq.write_table(pa.table({"text": text}), os.path.join(shards, "part-00000.parquet"), row_group_size=50_000)
    return shards, tok_path, write_tokens(text, tok_path)


def write_tokens(text: pa.Array, tok_path: str) -> int:
    """Our tokens of each row, space-joined, a line per non-empty row (gensim's LineSentence /
    corpus_file format); returns the number of tokens."""
    tokens, rows = tokenize(text, TokenizerConfig())
    lists = pa.ListArray.from_arrays(pa.array(_offsets(rows, len(text))), tokens)
    joined = pc.binary_join(lists, " ")
    with open(tok_path, "w", encoding="utf-8") as f:
        f.write("\n".join(s for s in joined.to_pylist() if s))
        f.write("\n")
    return len(tokens)


def _offsets(rows, n):
    import numpy as np
    counts = np.bincount(rows, minlength=n)
    return np.r_[0, np.cumsum(counts)].astype(np.int32)


def evaluate(vectors: Vectors) -> dict:
    """Analogy accuracy and WS-353 Spearman; ``analogy_answered`` questions had all four words in
    the vocabulary. A vocabulary that holds no WS-353 pair gives ``ws353`` NaN (bench/stress.py's
    tiny-vocabulary corpus), not an error."""
    an = evaluate_analogies(vectors, str(DATA / "questions-words.txt"))
    try:
        ws = evaluate_similarity(vectors, str(DATA / "wordsim353.tsv"))
    except ValueError:  # no usable word pairs
        ws = {"spearman": float("nan"), "oov_ratio": 1.0}
    return {"analogy": an["accuracy"], "analogy_oov": an["oov_ratio"],
            "analogy_answered": an["correct"] + an["incorrect"], "ws353": ws["spearman"], "ws353_oov": ws["oov_ratio"]}


def run_gensim(tok_path: str, model: str, a: argparse.Namespace, corpus_file: bool = False,
               keep_vectors: bool = False) -> dict:
    """gensim on the tokens file; ``corpus_file`` reads it with gensim's corpus_file mode (each
    worker thread reads its own part of the file) instead of a LineSentence iterator.
    ``keep_vectors``: the :class:`Vectors` too, under ``"_vectors"``."""
    from gensim.models import Word2Vec
    from gensim.models.word2vec import LineSentence

    t0 = time.perf_counter()
    alpha = a.alpha or (0.025 if model == "sg" else 0.05)  # the same as ours (gensim's default is 0.025 for both)
    source = {"corpus_file": tok_path} if corpus_file else {"sentences": LineSentence(tok_path)}
    m = Word2Vec(**source, vector_size=a.dim, window=a.window, negative=a.negative,
                 sample=a.sample, min_count=a.min_count, epochs=a.epochs, sg=int(model == "sg"),
                 workers=a.threads, seed=a.seed, alpha=alpha, min_alpha=1e-4)
    seconds = time.perf_counter() - t0
    words = m.corpus_total_words  # raw words per epoch
    vectors = Vectors(list(m.wv.index_to_key), m.wv.vectors)
    return {"seconds": seconds, "words_per_s": words * a.epochs / seconds, **evaluate(vectors),
            "train_loop_words_per_s": words * a.epochs / max(m.total_train_time, 1e-9),  # without the vocabulary pass
            **({"_vectors": vectors} if keep_vectors else {})}


GENSIM_PROCESS = """
import json, sys, time
t0 = time.perf_counter()
from gensim.models import Word2Vec
a = json.loads(sys.argv[1])
m = Word2Vec(corpus_file=a["tokens"], vector_size=a["dim"], window=a["window"], negative=a["negative"],
             sample=a["sample"], min_count=a["min_count"], epochs=a["epochs"], sg=a["sg"], workers=a["threads"],
             seed=a["seed"], alpha=a["alpha"], min_alpha=1e-4)
seconds = time.perf_counter() - t0
m.wv.save_word2vec_format(a["out"], binary=True)
print(json.dumps({"seconds": seconds, "train_loop_seconds": m.total_train_time, "words": m.corpus_total_words}))
"""


def run_gensim_process(tok_path: str, model: str, a: argparse.Namespace, out: str) -> dict:
    """gensim's whole ``Word2Vec(corpus_file=...)`` (import, vocabulary, training) in a fresh process."""
    args = {"tokens": tok_path, "dim": a.dim, "window": a.window, "negative": a.negative, "sample": a.sample,
            "min_count": a.min_count, "epochs": a.epochs, "sg": int(model == "sg"), "threads": a.threads,
            "seed": a.seed, "alpha": a.alpha or (0.025 if model == "sg" else 0.05), "out": out}
    p = subprocess.run([sys.executable, "-c", GENSIM_PROCESS, json.dumps(args)], capture_output=True, text=True)
    if p.returncode != 0:  # gensim's own words (its traceback was thrown away with the CalledProcessError)
        sys.exit(f"error: gensim's run failed ({p.returncode}):\n{p.stderr[-3000:]}")
    r = json.loads(p.stdout.strip().splitlines()[-1])
    return {"seconds": r["seconds"], "words_per_s": r["words"] * a.epochs / r["seconds"],
            "train_loop_words_per_s": r["words"] * a.epochs / max(r["train_loop_seconds"], 1e-9),
            **evaluate(Vectors.load(out))}


def run_ours(shards: str, model: str, a: argparse.Namespace, out: str) -> dict:
    """The whole ``w2v-dist train`` command in a fresh process."""
    cmd = [sys.executable, "-m", "w2v_dist", "-q", "train", shards, "--output", out, "--overwrite", "--model", model,
           "--dim", str(a.dim), "--window", str(a.window), "--negative", str(a.negative), "--sample", str(a.sample),
           "--min-count", str(a.min_count), "--epochs", str(a.epochs), "--seed", str(a.seed),
           "--threads", str(a.our_threads), "--workers", str(a.workers),
           "--cache-dir", tempfile.mkdtemp(prefix="cache-", dir=os.path.dirname(out)),  # each run tokenizes anew
           *shlex.split(a.extra_args)]
    if a.alpha:
        cmd += ["--alpha", str(a.alpha)]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT)
    seconds = time.perf_counter() - t0
    raw = json.loads(Path(out, "vocab", "vocab.json").read_text())["raw_tokens"]
    summary = json.loads(Path(out, "summary.json").read_text())
    return {"seconds": seconds, "words_per_s": raw * a.epochs / seconds, **evaluate(Vectors.load(out)),
            "train_loop_words_per_s": summary["words_per_s"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus", default=str(DATA / "gcide_en.txt.gz"))
    p.add_argument("--lines", type=int, default=None, help="only the first N lines")
    p.add_argument("--models", nargs="+", choices=("sg", "cbow"), default=["sg", "cbow"])
    p.add_argument("--dim", type=int, default=100)
    p.add_argument("--window", type=int, default=5)
    p.add_argument("--negative", type=int, default=5)
    p.add_argument("--sample", type=float, default=1e-3)
    p.add_argument("--min-count", type=int, default=5)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--alpha", type=float, default=None, help="default: 0.025 sg, 0.05 cbow (word2vec.c's), for both")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="gensim's workers (default: the cores)")
    p.add_argument("--our-threads", type=int, default=0,
                   help="our --threads (default 0: our default: two replicas on 2-4 cores, else the cores less one for the reader thread)")
    p.add_argument("--workers", type=int, default=0, help="our reader processes (0: a reader thread)")
    p.add_argument("--extra-args", default="", help="more flags for our train command, e.g. '--slice-words 2048'")
    p.add_argument("--encoded", action="store_true",
                   help="also train ours on the corpus `w2v-dist encode` writes (no tokenizing, no vocabulary pass)")
    p.add_argument("--json", default=str(ROOT / "bench" / "out" / "vs_gensim.json"),
                   help="where the results go (default: %(default)s)")
    p.add_argument("--keep", action="store_true", help="keep the working directory (shards, runs) in $TMPDIR")
    a = p.parse_args()
    check_inputs(p, a)
    logging.basicConfig(level=logging.WARNING)

    with workdir("w2v-bench-", a.keep) as work:
        _main(a, work)


@contextlib.contextmanager
def workdir(prefix: str, keep: bool) -> Iterator[str]:
    """A working directory in $TMPDIR, removed at the end unless ``keep`` (a whole gcide run leaves
    100-250 MB: 1.3 GB of them sat in /tmp)."""
    work = tempfile.mkdtemp(prefix=prefix)
    try:
        yield work
    finally:
        if keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


def _main(a: argparse.Namespace, work: str) -> None:
    shards, tok_path, n_tokens = make_inputs(a.corpus, work, a.lines)
    encoded, encode_s = os.path.join(work, "encoded"), 0.0
    if a.encoded:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "w2v_dist", "-q", "encode", shards, "--output", encoded,
                        "--min-count", str(a.min_count)], check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
        encode_s = time.perf_counter() - t0
    rows = []
    for model in a.models:
        runs = []
        for seed in a.seeds:
            a.seed = seed
            g = run_gensim_process(tok_path, model, a, os.path.join(work, f"gensim-{model}.bin"))
            o = run_ours(shards, model, a, os.path.join(work, f"run-{model}"))
            runs.append({"seed": seed, "gensim": g, "w2v_dist": o})
            if a.encoded:
                import numpy as np
                runs[-1]["encoded"] = e = run_ours(encoded, model, a, os.path.join(work, f"run-{model}-encoded"))
                e["same_vectors"] = float(np.array_equal(*(np.load(os.path.join(work, f"run-{model}{s}", "vectors.npy"))
                                                             for s in ("", "-encoded"))))
                print(f"{model} seed {seed}: encoded {e}", file=sys.stderr)
            print(f"{model} seed {seed}: gensim {g}\n{model} seed {seed}: w2v_dist {o}", file=sys.stderr)
        mean = {who: {k: statistics.mean(r[who][k] for r in runs) for k in runs[0][who]} for who in runs[0] if who != "seed"}
        rows.append({"model": model, "runs": runs, **mean})

    print(f"\ncorpus: {a.corpus} ({n_tokens:,} tokens{'' if a.lines is None else f', first {a.lines} lines'}); "
          f"d={a.dim} window={a.window} negative={a.negative} sample={a.sample} min_count={a.min_count} "
          f"epochs={a.epochs}; seeds {' '.join(map(str, a.seeds))} (means); gensim workers={a.threads}, our --threads {a.our_threads or 'default'}; "
          f"{platform.processor() or platform.machine()}\n")
    print("| model | gensim s | w2v_dist s | gensim words/s | w2v_dist words/s | speed ratio (ours/gensim) "
          "| gensim analogy | w2v_dist analogy | Δ analogy | gensim WS-353 | w2v_dist WS-353 | Δ WS-353 |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        g, o = r["gensim"], r["w2v_dist"]
        print(f"| {r['model']} | {g['seconds']:.1f} | {o['seconds']:.1f} | {g['words_per_s']:,.0f} | "
              f"{o['words_per_s']:,.0f} | {o['words_per_s'] / g['words_per_s']:.2f} | {g['analogy']:.4f} | "
              f"{o['analogy']:.4f} | {o['analogy'] - g['analogy']:+.4f} | {g['ws353']:.4f} | {o['ws353']:.4f} | "
              f"{o['ws353'] - g['ws353']:+.4f} |")
    if a.encoded:
        print(f"\nThe encoded corpus (`w2v-dist encode`, {encode_s:.1f} s once, not in the times below): ours on it "
              "against ours on the text and gensim, same seeds\n")
        print("| model | text s | encoded s | encoded words/s | vs text | vs gensim | vectors as on the text |")
        print("|---|---|---|---|---|---|---|")
        for r in rows:
            g, o, e = r["gensim"], r["w2v_dist"], r["encoded"]
            print(f"| {r['model']} | {o['seconds']:.1f} | {e['seconds']:.1f} | {e['words_per_s']:,.0f} | "
                  f"{e['words_per_s'] / o['words_per_s']:.2f} | {e['words_per_s'] / g['words_per_s']:.2f} | "
                  f"{'bitwise the same' if e['same_vectors'] == 1 else 'DIFFERENT'} |")
    for r in rows:
        print(f"\n{r['model']} per seed (analogy / WS-353): " + "; ".join(
            f"seed {x['seed']}: gensim {x['gensim']['analogy']:.4f} / {x['gensim']['ws353']:.4f}, "
            f"w2v_dist {x['w2v_dist']['analogy']:.4f} / {x['w2v_dist']['ws353']:.4f}" for x in r["runs"]))
    os.makedirs(os.path.dirname(a.json), exist_ok=True)
    with open(a.json, "w") as f:
        json.dump(json_safe({"args": vars(a), "tokens": n_tokens, "encode_s": encode_s, "rows": rows}), f, indent=2)


if __name__ == "__main__":
    main()
