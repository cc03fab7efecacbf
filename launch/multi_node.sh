#!/usr/bin/env bash
# Several machines with c10d rendezvous. Run this same script on every node.
#
#   CORPUS, OUTPUT   must be reachable from every node (object store or shared filesystem)
#   NNODES           number of nodes
#   HEAD             address of the node that hosts the rendezvous (any one of them)
#   RDZV_ID          a job id shared by all nodes, e.g. the run name
#   NPROC            processes per node (default 1); DEVICE cpu (default) or cuda
#   CACHE_DIR        node-local directory for the vocabulary copy (default: system temp dir)
set -euo pipefail
# torchrun SIGKILLs the ranks this long after passing a SIGTERM on (default 30 s, torch 2.11+ reads
# this): a checkpoint on a signal waits for the next full sync of the ranks (docs/distributed.md)
export TORCH_ELASTIC_SHUTDOWN_TIMEOUT=${TORCH_ELASTIC_SHUTDOWN_TIMEOUT:-120}
: "${CORPUS:?}" "${OUTPUT:?}" "${NNODES:?}" "${HEAD:?}" "${RDZV_ID:?}"
exec torchrun --nnodes "$NNODES" --nproc-per-node "${NPROC:-1}" \
    --rdzv-backend c10d --rdzv-endpoint "$HEAD:${PORT:-29500}" --rdzv-id "$RDZV_ID" \
    -m w2v_dist train "$CORPUS" --output "$OUTPUT" --device "${DEVICE:-cpu}" \
    ${CACHE_DIR:+--cache-dir "$CACHE_DIR"} "$@"
