#!/usr/bin/env bash
# Distributed testing through torchrun, as in OpenMMLab's own tools.
#   tools/dist_test.sh CONFIG CHECKPOINT GPUS [test.py args...]
# Several machines: NNODES, NODE_RANK, MASTER_ADDR, PORT (see tools/dist_run.sh).
exec "$(dirname "$0")/dist_run.sh" test.py "$3" "$1" "$2" "${@:4}"
