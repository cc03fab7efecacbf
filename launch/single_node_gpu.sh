#!/usr/bin/env bash
# One machine, one process per GPU (NCCL). Rank r uses cuda:LOCAL_RANK; the torch reference
# kernel runs the step; DDP all-reduces dense gradients (NCCL has no sparse all-reduce).
#
#   CORPUS, OUTPUT as in single_node_cpu.sh; NGPU defaults to all visible GPUs.
set -euo pipefail
# torchrun SIGKILLs the ranks this long after passing a SIGTERM on (default 30 s, torch 2.11+ reads
# this): a checkpoint on a signal waits for the next full sync of the ranks (docs/distributed.md)
export TORCH_ELASTIC_SHUTDOWN_TIMEOUT=${TORCH_ELASTIC_SHUTDOWN_TIMEOUT:-120}
: "${CORPUS:?set CORPUS}" "${OUTPUT:?set OUTPUT}"
NGPU=${NGPU:-$(nvidia-smi -L | wc -l)}
exec torchrun --standalone --nproc-per-node "$NGPU" -m w2v_dist train "$CORPUS" --output "$OUTPUT" \
    --device cuda --workers 2 "$@"
