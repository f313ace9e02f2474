#!/usr/bin/env bash
# tools/slurm_train.sh PARTITION JOB_NAME CONFIG WORK_DIR [train.py args...]
#
# One srun task per GPU, over as many nodes as needed, each running
# `tools/train.py --launcher slurm`: mmengine reads the rank, world size and
# local rank from SLURM_PROCID / SLURM_NTASKS / SLURM_LOCALID and the master
# address from the first host of SLURM_NODELIST (MASTER_ADDR and MASTER_PORT
# override it; the port defaults to 29500).
#   GPUS=16 GPUS_PER_NODE=8 tools/slurm_train.sh gpu rtdetr CONFIG work_dirs/x
# CPU-only nodes: GPUS_PER_NODE=0, GPUS = number of processes, TASKS_PER_NODE
# processes per node (default GPUS); ranks then talk over gloo without SyncBN
# (rtdetr_mm/engine/dist.py), each with OMP_NUM_THREADS threads (default 1).
set -euo pipefail

PARTITION=$1
JOB_NAME=$2
CONFIG=$3
WORK_DIR=$4
GPUS=${GPUS:-8}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
TASKS_PER_NODE=${TASKS_PER_NODE:-$(( GPUS_PER_NODE > 0 ? GPUS_PER_NODE : GPUS ))}
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
SRUN_ARGS=${SRUN_ARGS:-""}
TOOLS="$(cd "$(dirname "$0")" && pwd)"

GRES=()
if (( GPUS_PER_NODE > 0 )); then
    GRES=(--gres="gpu:$GPUS_PER_NODE")
fi

# SRUN_ARGS is split on spaces on purpose (extra srun options).
# shellcheck disable=SC2086
PYTHONPATH="$(dirname "$TOOLS")${PYTHONPATH:+:$PYTHONPATH}" \
OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} \
srun -p "$PARTITION" \
    --job-name="$JOB_NAME" \
    "${GRES[@]}" \
    --ntasks="$GPUS" \
    --ntasks-per-node="$TASKS_PER_NODE" \
    --cpus-per-task="$CPUS_PER_TASK" \
    --kill-on-bad-exit=1 \
    $SRUN_ARGS \
    "${PYTHON:-python}" -u "$TOOLS/train.py" "$CONFIG" --work-dir="$WORK_DIR" \
    --launcher slurm "${@:5}"
