#!/usr/bin/env bash
# Testing a checkpoint on a Slurm cluster through srun, with the arguments of OpenMMLab's
# own script:
#   [GPUS=8] [GPUS_PER_NODE=8] [CPUS_PER_TASK=5] [SRUN_ARGS="..."] \
#       tools/slurm_test.sh PARTITION JOB_NAME CONFIG CHECKPOINT [test.py args...]
# GPUS, GPUS_PER_NODE, GRES (GRES=none on a cluster without GPUs), SRUN_ARGS and PYTHON as
# in tools/slurm_train.sh.
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
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
GRES=${GRES-gpu:$GPUS_PER_NODE}
SRUN_ARGS=${SRUN_ARGS:-""}
PYTHON=${PYTHON:-python}
DIR="$(cd "$(dirname "$0")" && pwd)"
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
