#!/usr/bin/env bash
# Training on a Slurm cluster through srun, with the arguments of OpenMMLab's own script:
#   [GPUS=8] [GPUS_PER_NODE=8] [CPUS_PER_TASK=N] [SRUN_ARGS="..."] \
#       tools/slurm_train.sh PARTITION JOB_NAME CONFIG WORK_DIR [train.py args...]
# One task (process) per GPU: GPUS tasks in all, GPUS_PER_NODE of them on each node, which
# asks for --gres=$GRES (default gpu:$GPUS_PER_NODE); a task whose torch sees no GPU then
# stops. GRES=none runs on CPUs on purpose (MMDUALTOKEN_CPU=1): GPUS counts CPU processes.
# CPUS_PER_TASK: default 1 + the config's train_dataloader.num_workers. SRUN_ARGS: more
# srun options (--time=1-0, --mem=..., -l), PYTHON: the interpreter.
if [ $# -lt 4 ]; then
    sed -n '2,9p' "$0" >&2
    exit 2
fi
PARTITION=$1
JOB_NAME=$2
CONFIG=$3
WORK_DIR=$4
GPUS=${GPUS:-8}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
GRES=${GRES-gpu:$GPUS_PER_NODE}
SRUN_ARGS=${SRUN_ARGS:-""}
PYTHON=${PYTHON:-python}
DIR="$(cd "$(dirname "$0")" && pwd)"
if [ -z "${CPUS_PER_TASK:-}" ]; then  # the process and its loader's workers, by the config
    CPUS_PER_TASK=$(PYTHONWARNINGS=ignore PYTHONPATH="$DIR/..":$PYTHONPATH "$PYTHON" -c 'import sys
from mmdualtoken.launch import cpus_per_task
print(cpus_per_task(sys.argv[1], "train"))' "$CONFIG") || exit 1
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
    "$PYTHON" -u "$DIR/train.py" "$CONFIG" --work-dir="$WORK_DIR" --launcher=slurm "${@:5}"
