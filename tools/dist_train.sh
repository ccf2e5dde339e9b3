#!/usr/bin/env bash
# Distributed training through torchrun, as in OpenMMLab's own tools.
#   tools/dist_train.sh CONFIG GPUS [train.py args...]
# Several machines: NNODES, NODE_RANK, MASTER_ADDR, PORT (see tools/dist_run.sh).
exec "$(dirname "$0")/dist_run.sh" train.py "$2" "$1" "${@:3}"
