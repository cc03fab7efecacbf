#!/usr/bin/env bash
# One machine, CPU, N processes (gloo). Each rank runs the numba kernel with --threads threads and
# --workers reader processes: keep ranks x (threads + workers) <= cores.
#
#   CORPUS   Parquet shards (directory, glob or URI)          e.g. data/shards/ or s3://bucket/corpus/
#   OUTPUT   run directory, shared by all ranks               e.g. runs/r1 or s3://bucket/runs/r1
#   NPROC    processes (default 2)
set -euo pipefail
# torchrun SIGKILLs the ranks this long after passing a SIGTERM on (default 30 s, torch 2.11+ reads
# this): a checkpoint on a signal waits for the next full sync of the ranks (docs/distributed.md)
export TORCH_ELASTIC_SHUTDOWN_TIMEOUT=${TORCH_ELASTIC_SHUTDOWN_TIMEOUT:-120}
: "${CORPUS:?set CORPUS}" "${OUTPUT:?set OUTPUT}"
NPROC=${NPROC:-2}
CORES=$(nproc)
THREADS=$(( CORES / NPROC > 1 ? CORES / NPROC - 1 : 1 ))
exec torchrun --standalone --nproc-per-node "$NPROC" -m w2v_dist train "$CORPUS" --output "$OUTPUT" \
    --threads "$THREADS" --workers 1 "$@"
