#!/usr/bin/env bash
# Distributed training through torchrun, as in OpenMMLab's own tools.
#   tools/dist_train.sh CONFIG GPUS [train.py args...]
# Several machines: NNODES=2 NODE_RANK=0|1 MASTER_ADDR=host0 PORT=29500 on each machine.
# On machines without a GPU each process is one CPU worker and gloo is the backend.
CONFIG=$1
GPUS=$2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}
DIR="$(cd "$(dirname "$0")" && pwd)"
PYTHON=${PYTHON:-python}

PYTHONPATH="$DIR/..":$PYTHONPATH \
"$PYTHON" -m torch.distributed.run \
    --nnodes="$NNODES" \
    --node_rank="$NODE_RANK" \
    --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$GPUS" \
    --master_port="$PORT" \
    "$DIR/train.py" \
    "$CONFIG" \
    --launcher pytorch "${@:3}"
