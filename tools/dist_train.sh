#!/usr/bin/env bash
# tools/dist_train.sh CONFIG NPROC [train.py args...]
#
# Starts NPROC training processes on this machine with torchrun
# (python -m torch.distributed.run) and `tools/train.py --launcher pytorch`.
# With GPUs: one process per GPU, nccl, SyncBN where the config sets sync_bn.
# Without a visible GPU (CPU-only torch, or CUDA_VISIBLE_DEVICES=''): the same
# command runs NPROC CPU processes that talk over gloo, $OMP_NUM_THREADS
# threads each (1 unless set), no SyncBN (rtdetr_mm/engine/dist.py).
# Several nodes: run it on every node with the same MASTER_ADDR (node 0's
# address) and PORT, NNODES=<nodes> and NODE_RANK=0..NNODES-1.
set -euo pipefail

CONFIG=$1
GPUS=$2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}
TOOLS="$(cd "$(dirname "$0")" && pwd)"

PYTHONPATH="$(dirname "$TOOLS")${PYTHONPATH:+:$PYTHONPATH}" \
"${PYTHON:-python}" -m torch.distributed.run \
    --nnodes="$NNODES" \
    --node_rank="$NODE_RANK" \
    --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$GPUS" \
    --master_port="$PORT" \
    "$TOOLS/train.py" \
    "$CONFIG" \
    --launcher pytorch "${@:3}"
