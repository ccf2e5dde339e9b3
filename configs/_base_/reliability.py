# What every config of this repository adds to the frameworks' runtime for a run that
# survives faults (docs/reliability.md); listed last in the _base_ of each top-level config.
#
# - RandomStateHook: checkpoints carry every rank's RNG states, so --resume repeats an
#   uninterrupted run;
# - FiniteLossHook: a NaN or Inf loss stops the run at that iteration with the loss terms
#   named (on_nonfinite='skip' skips such optimizer steps instead), and no checkpoint with
#   non-finite weights is ever written.
#
# mmengine does not allow one key in two _base_ files, and default_hooks is the frameworks'
# (default_runtime.py, mmseg's schedules): each top-level config therefore sets
#     default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))
# (atomic checkpoint and last_checkpoint writes, outdated checkpoints removed only after
# both: a kill at any moment leaves a checkpoint to resume from).
# mmdualtoken.datasets.transforms: LoadCheckedImageFromFile, LoadCheckedSegMap and CheckSegMap
# (bad data gets one error naming the file)
custom_imports = dict(
    imports=['mmdualtoken', 'mmdualtoken.engine', 'mmdualtoken.datasets.transforms'],
    allow_failed_imports=False)
custom_hooks = [
    dict(type='RandomStateHook'),
    dict(type='FiniteLossHook', on_nonfinite='stop'),
]
