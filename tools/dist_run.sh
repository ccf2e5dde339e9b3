#!/usr/bin/env bash
# What dist_train.sh and dist_test.sh share: run tools/SCRIPT in NPROC processes per machine
# through torchrun, as OpenMMLab's own scripts do.
#   tools/dist_run.sh SCRIPT NPROC [SCRIPT args...]
# Several machines: NNODES=2 NODE_RANK=0|1 MASTER_ADDR=host0 PORT=29500 on each machine.
# On machines without a GPU each process is one CPU worker and gloo is the backend.
# If one process dies, torchrun ends the others and names the failed rank; one that hangs
# is not noticed: the others fail after the process-group timeout, which the train.py /
# test.py flag --dist-timeout SECONDS sets (env_cfg.dist_cfg.timeout; torch: 1800 s on gloo,
# 600 s on NCCL, whose watchdog then ends the process: docs/training.md).
SCRIPT=$1
NPROC=$2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}
DIR="$(cd "$(dirname "$0")" && pwd)"
PYTHON=${PYTHON:-python}

PYTHONPATH="$DIR/..":$PYTHONPATH \
exec "$PYTHON" -m torch.distributed.run \
    --nnodes="$NNODES" \
    --node_rank="$NODE_RANK" \
    --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$NPROC" \
    --master_port="$PORT" \
    "$DIR/$SCRIPT" \
    "${@:3}" \
    --launcher pytorch
