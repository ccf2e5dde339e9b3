"""Every exception class of mmdualtoken and its tools, in one module.

Two families, both printed by tools/train.py and tools/test.py
(:func:`mmdualtoken.launch.run_tool`) as one line, ``error: <message>``, with exit code 1:

* :class:`LaunchError`: a problem with the command line, the config or the data, found before
  anything runs (or, for bad data, when a sample is loaded);
* :class:`RunFault`: a fault found while the run was going (not a bug); the message says what
  to do, the log above it holds the details.

This module imports nothing, so that any part of the package (a data transform running in a
DataLoader worker, say) can raise these without importing the command-line code.
"""


class LaunchError(Exception):
    """A problem with the command line, the config or the data, found before anything runs."""


class MissingFileError(LaunchError, FileNotFoundError):
    """A config, dataset folder, annotation file or checkpoint that does not exist."""


class BadConfigError(LaunchError, ValueError):
    """A config or flag combination that cannot run."""


class MissingPackageError(LaunchError, ImportError):
    """A package that the requested feature needs is not installed; the message names what
    to install."""


class BadDataError(LaunchError, ValueError):
    """Data that cannot be trained on, in one line that names the file and the problem.

    Raised before training by :func:`mmdualtoken.datasets.checks.check_datasets`, or when a
    sample is loaded by the checking transforms of :mod:`mmdualtoken.datasets.transforms`.
    When a DataLoader worker raises it, torch re-raises it in the main process as
    ``BadDataError(<the worker's whole traceback>)``; the constructor keeps only the line
    the worker raised, so the user still reads one line.
    """

    def __init__(self, message: str):
        name = type(self).__name__
        if message.startswith(f'Caught {name} ') and f'{name}: ' in message:
            message = message.rstrip().rsplit(f'{name}: ', 1)[1]
        super().__init__(message)


class RunFault(RuntimeError):
    """A fault found while the run was going (not a bug): the message says what to do."""


class TrainingDivergedError(RunFault):
    """The loss or the weights became NaN or Inf (:class:`FiniteLossHook`)."""


class DistributedTimeoutError(RunFault):
    """A collective waited longer than the process-group timeout for another rank."""


class OnnxMismatchError(RunFault):
    """The exported graph's outputs differ from PyTorch's beyond the tolerance."""


class RunMismatch(ValueError):
    """A work dir trained another model than the ablation config it is named after."""
