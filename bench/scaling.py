"""Scale-out: 1 rank against 2, 4 and 8 ranks (torchrun, gloo, CPU) on the same corpus, the same
hyper-parameters, in the same run: words/s, their ratio, the bytes a rank sends per word it
trains, analogy accuracy and WS-353 Spearman, for SG and CBOW.

    python bench/scaling.py                                   # gcide, sg and cbow, 1 2 4 8 ranks, seeds 1 2 3
    python bench/scaling.py --models sg --ranks 1 2 --seeds 1 --lines 100000 --epochs 1   # a quick look
    python bench/scaling.py --extra-args='--sync-every 16'    # other sync settings
    python bench/scaling.py --ranks 1 2 --encoded             # every run on the corpus `w2v-dist encode` wrote
    python bench/scaling.py --ranks 1 2 --pin                 # one rank on one core (issue 9's count)
    python bench/scaling.py --ranks 4 8 --nodes 2 --extra-args='--sync-node-every 4'   # 2 nodes' syncs

``--pin`` makes one rank one core, as issue 9 counts it: the 1-rank runs and each of the two
independent trainings run on one CPU of their own (``sched_setaffinity``), their reader threads
(which tokenize the first epoch and draw every chunk's examples) sharing it; without it a lone
rank's reader takes the idle second core. N ranks (or N threads) run on the first N CPUs, where
the machine has them, so that on a many-core machine they get N cores as one rank gets one (on 2
cores, 4 and 8 ranks share both, as without ``--pin``).

Every rank runs one kernel thread and reads in a thread of its own process (``--threads 1
--workers 0``): one rank is one core for the kernel, and its reader takes part of another while it
tokenizes (the first epoch; later ones read the token cache): the "cores busy" column is each whole
command's CPU seconds over its wall seconds (start-up and the vocabulary pass included). On a
2-core machine 2 ranks use the cores one process with 2 threads (``--threads 2``, the reference
for quality and for the "2 ranks vs one 2-thread process" ratio) uses; 4 and 8 ranks
oversubscribe them, so their speed says nothing and their quality is the point. Beside each
seed's runs, two single-thread trainings that never talk run at once: what this machine gives
2 ranks with a free sync, measured as close in time as the runs it is compared with. Each run is
a whole ``w2v-dist train`` command timed from outside; the table's words/s are the training
loop's (``summary.json``: the same words, no start-up), the wall seconds include start-up and the
vocabulary pass.

Bytes: each rank's ``TableSync`` counts what it hands to ``all_reduce`` (deltas, plus a touched
flag per row for ``rowmean``); the table divides that by the words the rank trained. The row
"dense every step" is what DDP-style syncing of both whole tables after every step would send.
The same figures for a vocabulary of 1M words and d=300 are computed with the sync's own schedule
(:func:`w2v_dist.sync.rows_at`) at the run's words per step, not trained (tables of 2.4 GB per rank).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from bench import w2v_dist_command  # noqa: E402
from bench.vs_gensim import DATA, check_inputs, evaluate, json_safe, make_inputs, workdir  # noqa: E402
from w2v_dist.cli import build_parser, config_from_args  # noqa: E402
from w2v_dist.sync import auto_sync_every, bytes_per_sync, rows_at  # noqa: E402
from w2v_dist.vectors import Vectors  # noqa: E402


DIVERGED = 3  # the exit code of a run the divergence guard stopped


def cpu_seconds() -> float:
    """User + system CPU of this process's finished children and theirs (torchrun's ranks)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def pinned(cores: set[int] | None):
    """A ``preexec_fn`` that runs the child on ``cores`` only (None: wherever it may)."""
    return None if cores is None else (lambda: os.sched_setaffinity(0, cores))


def run(cmds: list[list[str]], env: dict, cores: set[int] | None = None) -> tuple[float, float] | None:
    """(seconds, CPU seconds) the commands took, run at once (one, or one torchrun agent per node);
    None if the divergence guard stopped them (a result of the table). ``cores``: the CPUs they may
    run on (``--pin``)."""
    t0, c0 = time.perf_counter(), cpu_seconds()
    procs = [subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              preexec_fn=pinned(cores)) for cmd in cmds]
    done = [(p.returncode, err) for p in procs for _, err in [p.communicate()]]
    if any(code == DIVERGED and "training diverged" in err for code, err in done):
        return None
    for cmd, (code, err) in zip(cmds, done):
        if code != 0:
            raise SystemExit(f"failed: {shlex.join(cmd)}\n{err[-4000:]}")
    return time.perf_counter() - t0, cpu_seconds() - c0


def elapsed(summary: dict, ranks: int) -> list[float]:
    """Each rank's training time (its own loop's; rank 0's for every rank in runs before
    ``rank_elapsed_s`` was written)."""
    return summary.get("rank_elapsed_s") or [summary["elapsed_s"]] * ranks


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


CEILING = """
import sys, time
from numba import njit
@njit(cache=False)
def spin(n):
    x = 0.0
    for i in range(n):
        x += (i % 7) * 0.5
    return x
spin(10)
t = time.perf_counter(); spin(int(sys.argv[1])); print(time.perf_counter() - t)
"""


def cores_ceiling(n: int = 400_000_000) -> float:
    """What 2 cores give two independent compute-bound processes, as a multiple of what one
    process alone gets (2.0 for two real cores; hyper-threads or a busy host give less). A
    rank-scaling ratio is read against this."""
    def batch(k: int) -> float:
        procs = [subprocess.Popen([sys.executable, "-c", CEILING, str(n)], stdout=subprocess.PIPE, text=True)
                 for _ in range(k)]
        return max(float(p.communicate()[0]) for p in procs)
    one = min(batch(1) for _ in range(2))
    two = min(batch(2) for _ in range(2))
    return 2 * one / two


def projected_bytes_per_word(V: int, dim: int, words_per_step: float, every: int, rows: int, combine: str,
                             syncs: int = 1 << 14, itemsize: int = 4) -> float:
    """Bytes a rank hands to all_reduce per word it trains, for the sync schedule over ``syncs``
    syncs (a long run: the schedule repeats every 2**ceil(log2(V / rows)) or FULL_EVERY syncs)."""
    sent = sum(bytes_per_sync(rows_at(k, V, rows), dim, combine, itemsize=itemsize) for k in range(1, syncs + 1))
    return sent / (syncs * every * words_per_step)


def _ratio(r: dict, base: dict | None) -> str:
    """``r``'s words/s over ``base``'s, or a dash where the run was not made (``--no-reference``)."""
    return f"{r['words_per_s'] / base['words_per_s']:.2f}x" if base else "—"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus", default=str(DATA / "gcide_en.txt.gz"))
    p.add_argument("--lines", type=int, default=None)
    p.add_argument("--models", nargs="+", choices=("sg", "cbow"), default=["sg", "cbow"])
    p.add_argument("--ranks", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--dim", type=int, default=100)
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--no-reference", action="store_true", help="skip the 1-process, 2-thread runs")
    p.add_argument("--no-independent", action="store_true",
                   help="skip the two independent trainings run beside each seed (the machine's ceiling)")
    p.add_argument("--extra-args", default="", help="more flags for every train command")
    p.add_argument("--encoded", action="store_true",
                   help="train on the corpus `w2v-dist encode` writes (the readers tokenize nothing; the same vectors)")
    p.add_argument("--pin", action="store_true",
                   help="one rank = one core: run 1 rank, and each of the independent pair, on one CPU of its own "
                        "(its reader thread shares it), N ranks (or a process of N threads) on the first N CPUs "
                        "(every CPU where there are fewer)")
    p.add_argument("--nodes", type=int, default=1,
                   help="run N ranks as this many torchrun agents on this host (N / nodes ranks each: nodes as "
                        "torchrun sees them, for --sync-node-every); 1: one agent, --standalone")
    p.add_argument("--json", default=str(ROOT / "bench" / "out" / "scaling.json"),
                   help="where the results go (default: %(default)s)")
    p.add_argument("--keep", action="store_true", help="keep the working directory (shards, runs) in $TMPDIR")
    a = p.parse_args()
    if a.nodes < 1 or any(n > 1 and n % a.nodes for n in a.ranks):
        p.error(f"--nodes {a.nodes}: every --ranks above 1 must be a multiple of it")
    check_inputs(p, a)
    if a.pin and not hasattr(os, "sched_getaffinity"):
        p.error("--pin: this system cannot set a process's CPUs (no os.sched_getaffinity); run without --pin")
    with workdir("w2v-bench-scaling-", a.keep) as work:
        _main(a, work)


def _main(a: argparse.Namespace, work: str) -> None:
    shards, _, n_tokens = make_inputs(a.corpus, work, a.lines)
    if a.encoded:
        subprocess.run([sys.executable, "-m", "w2v_dist", "-q", "encode", shards, "--output", shards + "-encoded"],
                       check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
        shards += "-encoded"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # the settings every run trains with (the sync's, for the tables below)
    cfg = config_from_args(build_parser().parse_args(["train", shards, "--output", work, *shlex.split(a.extra_args)]))
    setups = {} if a.no_reference else {"1 process, 2 threads": (1, 2)}
    setups.update({f"{n} rank{'s' * (n > 1)} x 1 thread": (n, 1) for n in a.ranks})
    cpus = sorted(os.sched_getaffinity(0)) if a.pin else []
    ceiling = cores_ceiling()
    print(f"2 compute-bound processes on this machine: {ceiling:.2f}x one alone", file=sys.stderr, flush=True)

    def command(model: str, seed: int, ranks: int, threads: int, out: str) -> list[str]:
        return [*w2v_dist_command(ranks), "-q", "train", shards, "--output", out, "--model", model,
                "--dim", str(a.dim), "--window", "5", "--negative", "5", "--sample", "1e-3", "--min-count", "5",
                "--epochs", str(a.epochs), "--seed", str(seed), "--threads", str(threads), "--workers", "0",
                "--cache-dir", out + "-cache", *shlex.split(a.extra_args)]

    def commands(model: str, seed: int, ranks: int, threads: int, out: str) -> list[list[str]]:
        """One command, or with ``--nodes`` one torchrun agent per node (static rendezvous here)."""
        cmd = command(model, seed, ranks, threads, out)
        if a.nodes == 1 or ranks == 1:
            return [cmd]
        port, args = free_port(), cmd[len(w2v_dist_command(ranks)):]
        return [[sys.executable, "-m", "torch.distributed.run", "--nnodes", str(a.nodes), "--node-rank", str(i),
                 "--nproc-per-node", str(ranks // a.nodes), "--master-addr", "127.0.0.1", "--master-port", str(port),
                 "-m", "w2v_dist", *args] for i in range(a.nodes)]

    def independent_pair(model: str, seed: int) -> float:
        """The machine's ceiling for this very workload: two single-thread trainings of the whole
        corpus at the same time, not talking to each other (what 2 ranks could reach with a free
        sync); their words/s summed. Run beside every seed's setups: the machine drifts."""
        outs = [os.path.join(work, f"{model}-independent-{seed}-{i}") for i in range(2)]
        procs = [subprocess.Popen(command(model, seed, 1, 1, o), cwd=ROOT, env=env, stderr=subprocess.PIPE,
                                  preexec_fn=pinned({cpus[i % len(cpus)]} if a.pin else None))
                 for i, o in enumerate(outs)]
        for q in procs:
            if q.wait() != 0:
                raise SystemExit(f"independent run failed: {q.stderr.read().decode()[-2000:]}")
        return sum(json.loads(Path(o, "summary.json").read_text())["words_per_s"] for o in outs)

    independent: dict[str, list[float]] = {m: [] for m in a.models}
    results: dict[str, dict[str, list[dict]]] = {m: {s: [] for s in setups} for m in a.models}
    for model in a.models:
        for seed in a.seeds:
            if not a.no_independent:
                independent[model].append(independent_pair(model, seed))
                print(model, "seed", seed, "2 independent processes, words/s summed:", independent[model][-1],
                      file=sys.stderr, flush=True)
            for label, (ranks, threads) in setups.items():
                out = os.path.join(work, f"{model}-{ranks}x{threads}-{seed}")
                took = run(commands(model, seed, ranks, threads, out), env,
                           set(cpus[:ranks * threads]) if a.pin and ranks * threads <= len(cpus) else None)
                if took is None:
                    results[model][label].append({"seed": seed, "diverged": True})
                    print(model, label, "seed", seed, "diverged", file=sys.stderr, flush=True)
                    continue
                summary = json.loads(Path(out, "summary.json").read_text())
                seconds, cpu = took
                r = {"seed": seed, "seconds": seconds, "words_per_s": summary["words_per_s"],
                     "cores_busy": cpu / seconds,  # the whole command's CPU over its wall time
                     "vocab_size": summary["vocab_size"], "steps": summary["steps"],
                     # bytes this rank sent / words this rank trained (words are counted over all ranks)
                     "bytes_per_word": summary["sync_bytes_per_word"] * ranks,
                     # of it, to the ranks of its own node (--sync-node-every)
                     "node_bytes_per_word": summary.get("node_sync_bytes_per_word", 0.0) * ranks,
                     "dense_bytes_per_word": (2 * summary["vocab_size"] * a.dim * 4 * summary["steps"]
                                              / (summary["words"] / ranks)) if ranks > 1 else 0.0,
                     # the ranks' mean share of their training time in collectives (waiting included)
                     "collectives": statistics.mean(
                         (x + y) / t for x, y, t in zip(summary["rank_sync_s"], summary["rank_exchange_s"],
                                                        elapsed(summary, ranks))) if ranks > 1 else 0.0,
                     # of it, the ranks' mean share spent waiting for the slowest (the rest: the collectives' own)
                     "waiting": statistics.mean(w / t for w, t in zip(summary["rank_wait_s"], elapsed(summary, ranks)))
                     if ranks > 1 else 0.0,
                     # the ranks' mean share of their training time spent waiting for their readers
                     "reader_waiting": statistics.mean(w / t for w, t in zip(
                         summary.get("rank_reader_wait_s") or [summary.get("reader_wait_s", 0.0)],
                         elapsed(summary, ranks))),
                     **evaluate(Vectors.load(out))}
                results[model][label].append(r)
                print(model, label, r, file=sys.stderr, flush=True)

    interval = (f"{cfg.sync_every} steps" if cfg.sync_every else
                f"{auto_sync_every(2)} steps at 2 ranks, {auto_sync_every(8)} at more")
    print(f"\ncorpus: {a.corpus} ({n_tokens:,} tokens{', encoded' if a.encoded else ''}); d={a.dim} window=5 negative=5 sample=1e-3 min_count=5 "
          f"epochs={a.epochs}; --batch-words {cfg.batch_words}, sync every {interval}, "
          f"{cfg.sync_rows} rows doubling, {cfg.sync_combine} {a.extra_args}; seeds {' '.join(map(str, a.seeds))} "
          f"(means); {os.cpu_count()} cores; two compute-bound processes get {ceiling:.2f}x what one alone gets "
          f"(the ceiling for 2 ranks vs 1)"
          + ("; --pin: 1 rank and each independent training on one CPU of its own, N ranks on N CPUs"
             if a.pin else "")
          + (f"; several ranks as {a.nodes} torchrun agents (nodes) on this host" if a.nodes > 1 else "") + "\n")
    table = {}
    for model in a.models:
        rows = {label: {k: statistics.mean(x[k] for x in ok) for k in ok[0] if k != "seed"}
                for label, runs in results[model].items() if (ok := [x for x in runs if not x.get("diverged")])}
        for label, runs in results[model].items():
            if any(x.get("diverged") for x in runs):
                print(f"{model} {label}: DIVERGED in seeds "
                      f"{' '.join(str(x['seed']) for x in runs if x.get('diverged'))} (the guard stopped it)")
        table[model] = rows
        one = next((r for label, r in rows.items() if label.startswith("1 rank")), None)
        ref = rows.get("1 process, 2 threads")
        print(f"**{model}**\n")
        print("| setup | wall s | cores busy | train words/s | vs 1 rank | vs 1 process, 2 threads | analogy | Δ | "
              "WS-353 | Δ | sync bytes/word/rank | dense every step | time in collectives | of it waiting | "
              "waiting for data |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for label, r in rows.items():
            base = ref or one or r  # without a reference run (--no-reference, no 1 rank): no deltas
            print(f"| {label} | {r['seconds']:.1f} | {r['cores_busy']:.2f} | {r['words_per_s']:,.0f} | "
                  f"{_ratio(r, one)} | {_ratio(r, ref)} | "
                  f"{r['analogy']:.4f} | {r['analogy'] - base['analogy']:+.4f} | {r['ws353']:.4f} | "
                  f"{r['ws353'] - base['ws353']:+.4f} | {r['bytes_per_word']:.1f}"
                  + (f" ({r['node_bytes_per_word']:.1f} within nodes)" if r.get('node_bytes_per_word') else "")
                  + f" | {r['dense_bytes_per_word']:,.0f} | "
                  f"{100 * r['collectives']:.0f}% | {100 * r['waiting']:.0f}% | {100 * r['reader_waiting']:.0f}% |")
        two = rows.get("2 ranks x 1 thread")
        if independent[model]:
            pair = statistics.mean(independent[model])
            print(f"\n2 independent single-thread {model} trainings at once (no sync; beside each seed's runs): "
                  f"{pair:,.0f} words/s together"
                  + (f" = {pair / one['words_per_s']:.2f}x one alone" if one else "")
                  + (f"; 2 ranks reach {two['words_per_s'] / pair:.2f} of that" if two else "")
                  + f" (per seed: {', '.join(f'{x:,.0f}' for x in independent[model])})\n")
        for label, runs in results[model].items():
            print(f"{model} {label} per seed (analogy / WS-353 / words/s): " + "; ".join(
                f"seed {x['seed']}: diverged" if x.get("diverged") else
                f"seed {x['seed']}: {x['analogy']:.4f} / {x['ws353']:.4f} / {x['words_per_s']:,.0f}" for x in runs))
        print()

    wps = cfg.batch_words  # a rank's step is one chunk
    every = cfg.sync_every or auto_sync_every(8)  # many ranks' default
    print(f"Sync bytes per rank per trained word at |V| = 1M, d = 300, from the sync's schedule every {every} "
          "steps (computed, not trained):\n")
    got = projected_bytes_per_word(1_000_000, 300, wps, every, cfg.sync_rows, cfg.sync_combine,
                                   itemsize=getattr(torch, cfg.sync_dtype).itemsize)
    dense = 2 * 1_000_000 * 300 * 4 / wps
    projected = {"words_per_step": wps, "sync_every": every, "bytes_per_word": got, "dense_bytes_per_word": dense}
    print("| words/step/rank | sync bytes/word/rank | dense every step | ratio |")
    print("|---|---|---|---|")
    print(f"| {wps:,} | {got:,.0f} | {dense:,.0f} | {dense / got:.0f}x fewer |")
    os.makedirs(os.path.dirname(a.json), exist_ok=True)
    with open(a.json, "w") as f:
        json.dump(json_safe({"args": vars(a), "tokens": n_tokens, "cores_ceiling": ceiling, "independent": independent,
                             "runs": results, "means": table, "projected": projected}), f, indent=2)


if __name__ == "__main__":
    main()
