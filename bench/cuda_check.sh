#!/usr/bin/env bash
# The CUDA path, end to end, on a GPU machine: what was run there (docs/distributed.md, "On GPUs").
#
#   bash bench/cuda_check.sh CORPUS SLICE ANALOGIES WS353 [OUT]
#
# CORPUS and SLICE: `w2v-dist prepare` outputs (the sessions used all of gcide and its first 120,000
# lines). One epoch of CORPUS for speed (skip-gram and CBOW, and skip-gram at 16 times the default
# `--batch-pairs`; the numba kernel on the machine's cores for scale); SLICE for the repeat check and
# the torchrun runs. Each step has its own time limit and the script goes on after a failure, so one
# broken step still leaves the others' results: every run's summary and evaluation go to
# OUT/results.jsonl, all output to OUT/log.txt. DEVICE=cpu runs the same steps on the CPU (a dry
# run of the script; the torchrun steps need CUDA and are skipped). ONLY="sg repeat ..." runs only the
# groups named (sg cbow sg-4096 sg-atomics repeat torchrun errors step probe numba; the fused CUDA kernel's:
# fused-test fused fused-one-warp fused-resume fused-torchrun fused-stress, the last with STRESS="corpus.txt.gz ...").
set -u
CORPUS=$1 SLICE=$2 ANALOGIES=$3 WS=$4 OUT=${5:-${OUT:-/tmp/cuda_check}}
DEVICE=${DEVICE:-cuda}
RUNS=$(mktemp -d)
PY=${PYTHON:-python3}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
mkdir -p "$OUT"
exec > >(tee -a "$OUT/log.txt") 2>&1

want() { [ -z "${ONLY:-}" ] || [[ " $ONLY " == *" $1 "* ]]; }

. "$(dirname "$0")/check_steps.sh"  # step, record

TRAIN="$PY -m w2v_dist train"  # (word-split below: paths without spaces)
TORCHRUN="$PY -m torch.distributed.run --standalone"

step env 60 bash -c "nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null; $PY -c 'import sys, torch, numpy, numba, pyarrow; print(sys.version.split()[0], torch.__version__, torch.version.cuda, torch.cuda.is_available(), numpy.__version__, numba.__version__, pyarrow.__version__)'"

# one process, the defaults but one epoch of CORPUS: skip-gram, CBOW, skip-gram at --batch-pairs 4096,
# skip-gram with atomic adds (--nondeterministic)
if want sg; then
    step sg 120 $TRAIN $CORPUS --overwrite --output "$RUNS/sg" --device "$DEVICE" --epochs 1
    record sg "$RUNS/sg"
fi
if want cbow; then
    step cbow 90 $TRAIN $CORPUS --overwrite --output "$RUNS/cbow" --device "$DEVICE" --model cbow --epochs 1
    record cbow "$RUNS/cbow"
fi
if want sg-4096; then
    step sg-4096 60 $TRAIN $CORPUS --overwrite --output "$RUNS/sg4096" --device "$DEVICE" --epochs 1 --batch-pairs 4096
    record sg-4096 "$RUNS/sg4096"
fi
if want sg-atomics; then
    step sg-atomics 120 $TRAIN $CORPUS --overwrite --output "$RUNS/sgnd" --device "$DEVICE" --epochs 1 --nondeterministic
    record sg-atomics "$RUNS/sgnd"
fi

# the same command twice: bitwise the same vectors?
if want repeat; then
    step repeat-a 60 $TRAIN $SLICE --overwrite --output "$RUNS/a" --device "$DEVICE" --epochs 1
    step repeat-b 60 $TRAIN $SLICE --overwrite --output "$RUNS/b" --device "$DEVICE" --epochs 1
    $PY -c "import numpy as np; a, b = (np.load(f'$RUNS/{x}/vectors.npy') for x in 'ab'); print('repeat: bitwise equal', np.array_equal(a, b), 'max |diff|', float(np.abs(a - b).max()))"
    record repeat "$RUNS/a"
fi

if [ "$DEVICE" = cuda ]; then
    # torchrun: one rank on NCCL; two ranks sharing the one GPU over gloo
    if want torchrun; then
        step torchrun-1-nccl 90 $TORCHRUN --nproc-per-node 1 -m w2v_dist train $SLICE --overwrite --output "$RUNS/t1" --device cuda --epochs 1
        record torchrun-1-nccl "$RUNS/t1"
        step torchrun-2-gloo 120 $TORCHRUN --nproc-per-node 2 -m w2v_dist train $SLICE --overwrite --output "$RUNS/t2" --device cuda:0 --backend gloo --epochs 1
        record torchrun-2-gloo "$RUNS/t2"
    fi
    # what NCCL refuses (two ranks on one GPU; more ranks than GPUs) must be one line, before training
    if want errors; then
        step two-ranks-one-gpu-nccl 60 $TORCHRUN --nproc-per-node 2 -m w2v_dist train $SLICE --overwrite --output "$RUNS/t3" --device cuda:0 --epochs 1
        step more-ranks-than-gpus 60 $TORCHRUN --nproc-per-node 2 -m w2v_dist train $SLICE --overwrite --output "$RUNS/t4" --device cuda --epochs 1
    fi
fi

# the fused CUDA kernel (--kernel cuda): its tests on the device (one warp against the CPU kernel,
# racing warps training the same examples), then 5 epochs of CORPUS (skip-gram, CBOW, skip-gram with
# chunks of 100,000 words), the vectors evaluated
FUSED="--nondeterministic --device $DEVICE"
if want fused-test; then
    step fused-test 240 env W2V_CUDA_TEST=gpu $PY -m pytest -q -n 0 -p no:cacheprovider tests/test_cuda_kernel.py
fi
if want fused; then
    step fused-sg 150 $TRAIN $CORPUS --overwrite --output "$RUNS/fsg" $FUSED
    record fused-sg "$RUNS/fsg"
    step fused-cbow 150 $TRAIN $CORPUS --overwrite --output "$RUNS/fcbow" $FUSED --model cbow
    record fused-cbow "$RUNS/fcbow"
    step fused-sg-100k 150 $TRAIN $CORPUS --overwrite --output "$RUNS/fsg100k" $FUSED --batch-words 100000
    record fused-sg-100k "$RUNS/fsg100k"
fi
# one warp (--threads 1) races with nothing: the same command twice, bitwise the same vectors?
if want fused-one-warp; then
    for x in a b; do step "one-warp-$x" 120 $TRAIN $SLICE --overwrite --output "$RUNS/w$x" --device "$DEVICE" --kernel cuda --threads 1 --epochs 1; done
    $PY -c "import numpy as np; a, b = (np.load(f'$RUNS/w{x}/vectors.npy') for x in 'ab'); print('one warp: bitwise equal', np.array_equal(a, b))"
    record one-warp "$RUNS/wa"
fi
# a kill and a resume on CUDA, for the repeatable kernels (the torch reference; the fused one with
# one warp): SIGKILL after step 12, run the command again, the vectors of an uninterrupted run?
if want fused-resume; then
    for kernel in torch "cuda --threads 1"; do
        tag=${kernel%% *}
        args="$SLICE --device $DEVICE --kernel $kernel --epochs 2 --checkpoint-every 5"
        step "resume-$tag-whole" 120 $TRAIN $args --output "$RUNS/r-$tag-whole"
        step "resume-$tag-killed" 120 env W2V_DIST_FAULT=kill@step:0:12 $TRAIN $args --output "$RUNS/r-$tag"
        step "resume-$tag-resumed" 120 $TRAIN $args --output "$RUNS/r-$tag"
        $PY -c "import numpy as np; a, b = (np.load(f'$RUNS/r-$tag{x}/vectors.npy') for x in ('-whole', '')); print('resume $tag: bitwise equal', np.array_equal(a, b))"
    done
fi
if want fused-torchrun && [ "$DEVICE" = cuda ]; then
    step fused-torchrun-1-nccl 120 $TORCHRUN --nproc-per-node 1 -m w2v_dist train $SLICE --overwrite --output "$RUNS/ft1" $FUSED --epochs 1
    record fused-torchrun-1-nccl "$RUNS/ft1"
    step fused-torchrun-2-gloo 150 $TORCHRUN --nproc-per-node 2 -m w2v_dist train $SLICE --overwrite --output "$RUNS/ft2" --nondeterministic --device cuda:0 --backend gloo --epochs 1
    record fused-torchrun-2-gloo "$RUNS/ft2"
fi
if want fused-stress; then
    for text in ${STRESS:-}; do
        name=$(basename "$text"); name=${name%%.*}
        step "prepare-$name" 120 $PY -m w2v_dist -q prepare "$text" --output "$RUNS/$name-shards" --overwrite
        for model in sg cbow; do
            step "fused-$name-$model" 150 $TRAIN "$RUNS/$name-shards" --overwrite --output "$RUNS/$name-$model" $FUSED --model $model
            record "fused-$name-$model" "$RUNS/$name-$model"
            $PY -c "import json; m = [json.loads(l) for l in open('$RUNS/$name-$model/metrics.jsonl')]; l = [r['loss'] for r in m if 'loss' in r]; print('$name $model loss first/max/last', l[0], max(l), l[-1])" 2>&1 | tail -1
        done
    done
fi

# the step alone: µs per mini-batch, fixed-order adds against atomics, as a CUDA graph
if want step; then
    step torch-step 120 $PY bench/torch_step.py --device "$DEVICE" --steps 300
fi

# a fused numba-cuda skip-gram kernel (bench/cuda_fused_probe.py: a probe, not the product): checked
# against its plain loop on the GPU (the shuffles the simulator lacks), then 5 epochs of CORPUS at two
# sizes of grid (PROBE_GRIDS="WARPS_PER_BLOCKxBLOCKS_PER_SM ...", default "4x8 8x16"), the vectors evaluated
if want probe; then
    step probe-check 60 $PY bench/cuda_fused_probe.py --check
    for grid in ${PROBE_GRIDS:-4x8 8x16}; do
        set -- ${grid/x/ }
        step "probe-$1x$2" 100 $PY bench/cuda_fused_probe.py $CORPUS --out "$RUNS/probe-$1x$2.txt" --epochs 5 \
            --warps-per-block "$1" --blocks-per-sm "$2"
        record "probe-$1x$2" "$RUNS/probe-$1x$2.txt"
    done
fi

# the numba kernel on this machine's cores (its default threads; compiled here first), for scale
if want numba; then
    step sg-numba-cpu 120 $TRAIN $CORPUS --overwrite --output "$RUNS/numba" --device cpu --epochs 1
    record sg-numba-cpu "$RUNS/numba"
fi
rm -rf "$RUNS"
