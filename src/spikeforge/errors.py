"""Errors a user can cause: bad flags, bad files, damaged checkpoints; and warnings.

The CLI prints ``str(error)`` as one sentence on stderr and exits with status 2, no traceback.
A :class:`SpikeforgeWarning` (``warnings.warn``) goes on stderr as one line, and the run goes on.
"""


class SpikeforgeError(Exception):
    """Base class of every error whose message tells the user what is wrong and what to do."""


class DataError(SpikeforgeError):
    """A dataset file is missing, truncated, corrupt or of the wrong format."""


class ConfigError(SpikeforgeError):
    """A flag, config value or recipe name is invalid."""


class CheckpointError(SpikeforgeError):
    """A checkpoint or run directory is missing, damaged or belongs to another model."""


class WriteError(SpikeforgeError):
    """A file or folder could not be written (read-only folder, no permission, disk full)."""


class SpikeforgeWarning(UserWarning):
    """Something in the user's data or inputs that works but is probably not what they meant."""
