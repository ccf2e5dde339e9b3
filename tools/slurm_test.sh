#!/usr/bin/env bash
# Testing a checkpoint on a Slurm cluster through srun, with the arguments of OpenMMLab's
# own script:
#   [GPUS=8] [GPUS_PER_NODE=8] [CPUS_PER_TASK=N] [SRUN_ARGS="..."] \
#       tools/slurm_test.sh PARTITION JOB_NAME CONFIG CHECKPOINT [test.py args...]
# GPUS, GPUS_PER_NODE, GRES (GRES=none on a cluster without GPUs), SRUN_ARGS and PYTHON as
# in tools/slurm_train.sh; CPUS_PER_TASK: default 1 + test_dataloader.num_workers.
if [ $# -lt 4 ]; then
    sed -n '2,7p' "$0" >&2
    exit 2
fi
PARTITION=$1
JOB_NAME=$2
CONFIG=$3
CHECKPOINT=$4
GPUS=${GPUS:-8}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
GRES=${GRES-gpu:$GPUS_PER_NODE}
SRUN_ARGS=${SRUN_ARGS:-""}
PYTHON=${PYTHON:-python}
DIR="$(cd "$(dirname "$0")" && pwd)"
if [ -z "${CPUS_PER_TASK:-}" ]; then  # the process and its loader's workers, by the config
    CPUS_PER_TASK=$(PYTHONWARNINGS=ignore PYTHONPATH="$DIR/..":$PYTHONPATH "$PYTHON" -c 'import sys
from mmdualtoken.launch import cpus_per_task
print(cpus_per_task(sys.argv[1], "test"))' "$CONFIG") || exit 1
fi
GRES_ARG=()
if [ "$GRES" = none ]; then
    export MMDUALTOKEN_CPU=1  # CPU processes on purpose
elif [ -n "$GRES" ]; then
    GRES_ARG=(--gres="$GRES")
    export GPUS  # each task knows it was meant for a GPU: it stops if torch sees none
fi

# SRUN_ARGS unquoted on purpose: it holds several options
PYTHONPATH="$DIR/..":$PYTHONPATH \
exec srun --partition="$PARTITION" \
    --job-name="$JOB_NAME" \
    "${GRES_ARG[@]}" \
    --ntasks="$GPUS" \
    --ntasks-per-node="$GPUS_PER_NODE" \
    --cpus-per-task="$CPUS_PER_TASK" \
    --kill-on-bad-exit=1 \
    ${SRUN_ARGS} \
    "$PYTHON" -u "$DIR/test.py" "$CONFIG" "$CHECKPOINT" --launcher=slurm "${@:5}"
