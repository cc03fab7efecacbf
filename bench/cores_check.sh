#!/usr/bin/env bash
# The CPU side of a many-core machine, in one call: what this project's 2-core machine cannot show.
#
#   bash bench/cores_check.sh DATA [OUT]
#
# DATA holds gcide_en.txt.gz, questions-words.txt and wordsim353.tsv (a copy of ../shared/data in
# a folder the device call carries: docs/benchmarks.md, "1 to 16 ranks on a 16-core machine"); it
# is linked as ../shared/data where that is missing, which is where the bench scripts look.
# Groups (ONLY="threads ranks" by default):
#   threads  one process on all the cores, gcide, 5 epochs, skip-gram and CBOW: the default
#            (--threads 0: the cores less one, deterministic), one thread, and --nondeterministic;
#            words/s, the seconds waited for the reader (summary.json) and the scores. Never
#            measured past 2 cores: is the default faster than one thread there, or than ranks?
#            Then the kernel alone (bench/kernel.py) at 1, 4 and 16 threads and 16 racing ones.
#   ranks    bench/scaling.py --ranks 1 2 4 8 16 --seeds 1 --pin (N ranks on N CPUs, issue 9's
#            count), both models, without the independent pair; its probe of two compute-bound
#            processes says how steady the machine is.
# LINES=N trains on gcide's first N lines (a dry run here: 2 minutes on 2 cores with 20000); every
# step has its own time limit and the script goes on after a failure. Results: OUT/results.jsonl
# and OUT/scaling.json, all output OUT/log.txt. On the 16-core H200 machine each group takes 5-7
# minutes, the first call's kernel build (1-3 minutes) included: one group a call (600 s at most),
# ONLY=threads first (never measured), then ONLY=ranks if the session's device time allows.
set -u
DATA=$(cd "$1" && pwd) OUT=${2:-${OUT:-/tmp/cores_check}}
PY=${PYTHON:-python3}
RUNS=$(mktemp -d)
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
mkdir -p "$OUT"
exec > >(tee -a "$OUT/log.txt") 2>&1
[ -e ../shared/data ] || { mkdir -p ../shared && ln -s "$DATA" ../shared/data; }

want() { [[ " ${ONLY:-threads ranks} " == *" $1 "* ]]; }

ANALOGIES=$DATA/questions-words.txt WS=$DATA/wordsim353.tsv
. "$(dirname "$0")/check_steps.sh"  # step, record

step env 60 bash -c "nproc; lscpu | grep -E 'Model name|Thread|Core|Socket'; $PY -c 'import sys, torch, numpy, numba, pyarrow; print(sys.version.split()[0], torch.__version__, numpy.__version__, numba.__version__, pyarrow.__version__)'"
LINES_ARGS=()
[ -n "${LINES:-}" ] && LINES_ARGS=(--lines "$LINES")

if want threads; then
    text="$RUNS/text.txt"
    if [ -n "${LINES:-}" ]; then zcat "$DATA/gcide_en.txt.gz" | head -n "$LINES" >"$text"; else text="$DATA/gcide_en.txt.gz"; fi
    step prepare 180 $PY -m w2v_dist -q prepare "$text" --output "$RUNS/shards"
    # the kernels' first build (minutes on a bare machine) before anything is timed
    step warm-up 300 $PY -m w2v_dist -q train "$RUNS/shards" --output "$RUNS/warm" --epochs 1 --threads 2 --cache-dir "$RUNS/cache"
    for model in sg cbow; do
        for setting in "default:" "one-thread:--threads 1" "nondeterministic:--nondeterministic"; do
            name="$model-${setting%%:*}"
            step "$name" 240 $PY -m w2v_dist train "$RUNS/shards" --output "$RUNS/$name" --model "$model" \
                --seed 1 --log-every 600 --cache-dir "$RUNS/cache" ${setting#*:}
            record "$name" "$RUNS/$name"
        done
    done
    # the kernel alone at 1, 4 and 16 deterministic threads and 16 racing ones (docs/training.md,
    # "How the merge's cost grows with the threads": projected, never timed on 16 cores)
    step kernel 240 $PY bench/kernel.py --models cbow sg --configs 1:1024 4:0 16:0 16:1024:hogwild \
        --corpus "$DATA/gcide_en.txt.gz" --lines "${LINES:-150000}" --reps 2
fi

if want ranks; then
    step ranks 420 $PY bench/scaling.py --models sg cbow --ranks 1 2 4 8 16 --seeds 1 --no-independent --pin \
        --corpus "$DATA/gcide_en.txt.gz" "${LINES_ARGS[@]}" --json "$OUT/scaling.json"
fi
rm -rf "$RUNS"
