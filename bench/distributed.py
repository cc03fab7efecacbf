"""One process against torchrun with 2 ranks (gloo, CPU), same corpus, same hyper-parameters,
same run: words/s, bytes each rank hands to the gradient all-reduce per step, analogy accuracy
and WS-353 Spearman.

    python bench/distributed.py                      # ../shared/data/gcide_en.txt.gz, sg, 5 epochs, seeds 1 2 3
    python bench/distributed.py --lines 100000 --epochs 1 --seeds 1   # a quick look

On a 2-core machine two ranks share the cores the single process has to itself (each rank gets
1 kernel thread and 1 reader); the point of this table is that the result is the same model, and
what the synchronisation costs, not a speed-up.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.vs_gensim import DATA, evaluate, make_inputs  # noqa: E402
from w2v_dist.vectors import Vectors  # noqa: E402


def run(cmd: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{p.stderr[-4000:]}")
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus", default=str(DATA / "gcide_en.txt.gz"))
    p.add_argument("--lines", type=int, default=None)
    p.add_argument("--model", default="sg")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--dim", type=int, default=100)
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3],
                   help="each setup is trained once per seed; the table shows means (and each seed below it)")
    p.add_argument("--json", default=str(ROOT / "bench" / "out" / "distributed.json"))
    a = p.parse_args()
    work = tempfile.mkdtemp(prefix="w2v-bench-dist-")
    shards, _, n_tokens = make_inputs(a.corpus, work, a.lines)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cores = os.cpu_count() or 2
    setups = {
        "1 process": [sys.executable, "-m", "w2v_dist", "--threads", str(cores)],
        "torchrun 2 ranks": [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                             "-m", "w2v_dist", "--threads", str(max(cores // 2, 1))],
    }
    runs: dict[str, list[dict]] = {label: [] for label in setups}
    for seed in a.seeds:
        for label, launcher in setups.items():
            out = os.path.join(work, f"{label.split()[0]}-{seed}")
            cmd = [*launcher[:launcher.index("w2v_dist") + 1], "train", shards, "--output", out,
                   *launcher[launcher.index("w2v_dist") + 1:],
                   "--model", a.model, "--dim", str(a.dim), "--window", "5", "--negative", "5", "--sample", "1e-3",
                   "--min-count", "5", "--epochs", str(a.epochs), "--seed", str(seed), "--log-every", "30",
                   "--workers", "1"]
            seconds = run(cmd, env)
            summary = json.loads(Path(out, "summary.json").read_text())
            vocab = json.loads(Path(out, "vocab", "vocab.json").read_text())
            runs[label].append({"seed": seed, "seconds": seconds, "words_per_s": summary["words"] / summary["elapsed_s"],
                                "steps": summary["steps"], "sync_bytes_per_step": summary["sync_bytes_per_step"],
                                "dense_bytes_per_step": 2 * vocab["size"] * a.dim * 4 if summary["world_size"] > 1 else 0,
                                **evaluate(Vectors.load(out))})
            print(label, runs[label][-1], file=sys.stderr, flush=True)
    rows = [{"setup": label, "runs": r, **{k: statistics.mean(x[k] for x in r) for k in r[0] if k != "seed"}}
            for label, r in runs.items()]

    print(f"\ncorpus: {a.corpus} ({n_tokens:,} tokens); {a.model} d={a.dim} window=5 negative=5 sample=1e-3 "
          f"min_count=5 epochs={a.epochs}; seeds {' '.join(map(str, a.seeds))} (means); {cores} cores\n")
    print("| setup | wall s | train words/s | steps | all-reduce bytes/step/rank (row-sparse) | dense would be | "
          "analogy | WS-353 |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['setup']} | {r['seconds']:.1f} | {r['words_per_s']:,.0f} | {r['steps']:,.0f} | "
              f"{r['sync_bytes_per_step'] / 1e6:.2f} MB | {r['dense_bytes_per_step'] / 1e6:.1f} MB | "
              f"{r['analogy']:.4f} | {r['ws353']:.4f} |")
    d = rows[1]["analogy"] - rows[0]["analogy"], rows[1]["ws353"] - rows[0]["ws353"]
    print(f"\n2 ranks - 1 process (means): analogy {d[0]:+.4f}, WS-353 {d[1]:+.4f}")
    for r in rows:
        print(f"{r['setup']} per seed (analogy / WS-353): " + "; ".join(
            f"seed {x['seed']}: {x['analogy']:.4f} / {x['ws353']:.4f}" for x in r["runs"]))
    os.makedirs(os.path.dirname(a.json), exist_ok=True)
    with open(a.json, "w") as f:
        json.dump({"args": vars(a), "tokens": n_tokens, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
