#!/usr/bin/env bash
# tools/dist_test.sh CONFIG CHECKPOINT NPROC [test.py args...]
#
# NPROC test processes on this machine (torchrun + `tools/test.py --launcher
# pytorch`); each predicts its share of the images and rank 0 gathers and
# evaluates them. GPUs: one process per GPU, nccl. No visible GPU: CPU
# processes over gloo (rtdetr_mm/engine/dist.py). Several nodes: NNODES,
# NODE_RANK, MASTER_ADDR, PORT as in tools/dist_train.sh.
set -euo pipefail

CONFIG=$1
CHECKPOINT=$2
GPUS=$3
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
    "$TOOLS/test.py" \
    "$CONFIG" \
    "$CHECKPOINT" \
    --launcher pytorch \
    "${@:4}"
