"""Faults that stop a training or test run with a one-line explanation.

tools/train.py and tools/test.py (mmdualtoken.launch.run_tool) print a :class:`RunFault` as
``error: ...`` and exit 1, as they do for a bad command line or config (LaunchError): the
log above it holds the details.
"""


class RunFault(RuntimeError):
    """A fault found while the run was going (not a bug): the message says what to do."""


class TrainingDivergedError(RunFault):
    """The loss or the weights became NaN or Inf (:class:`FiniteLossHook`)."""


class DistributedTimeoutError(RunFault):
    """A collective waited longer than the process-group timeout for another rank."""
