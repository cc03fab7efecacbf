#!/usr/bin/env bash
# One machine, one process per GPU (NCCL). Rank r uses cuda:LOCAL_RANK; the torch reference
# kernel runs the step; DDP all-reduces dense gradients (NCCL has no sparse all-reduce).
#
#   CORPUS, OUTPUT as in single_node_cpu.sh; NGPU defaults to all visible GPUs.
set -euo pipefail
: "${CORPUS:?set CORPUS}" "${OUTPUT:?set OUTPUT}"
NGPU=${NGPU:-$(nvidia-smi -L | wc -l)}
exec torchrun --standalone --nproc-per-node "$NGPU" -m w2v_dist train "$CORPUS" --output "$OUTPUT" \
    --device cuda --workers 2 "$@"
