"""One exception family for everything tfgrpo raises on purpose.

Every message says what was wrong and what to do about it. Errors raised for bad input are raised
before anything stored is touched, so catching one leaves the library exactly as it was.
"""


class TFGRPOError(Exception):
    """Base class of every error tfgrpo raises on purpose."""


class ConfigError(TFGRPOError, ValueError):
    """A configuration value that cannot work (names the field and what is allowed)."""


class InvalidRolloutsError(TFGRPOError, ValueError):
    """A rollout group that cannot be scored: mismatched lengths, too small, non-finite rewards."""


class LibraryFormatError(TFGRPOError):
    """A library file that is corrupted, foreign or written in an unknown format."""


class LibraryNotFoundError(TFGRPOError, FileNotFoundError):
    """No library file at the given path."""


class StoreError(TFGRPOError):
    """A persistence failure (disk full, database locked, ...). Nothing was changed in memory."""


class BackendError(TFGRPOError):
    """A model backend failed: the model could not be loaded, or a server refused the request or kept
    failing after every retry (the message says which, and what it answered)."""


class RewardError(TFGRPOError, ValueError):
    """A reward that cannot be computed: a non-finite value, or a sample without the field it needs."""


class SandboxError(TFGRPOError, RuntimeError):
    """The sandbox itself could not be set up (not the program's fault); the message says why."""


class ExecutorError(TFGRPOError):
    """Work sent to an executor (a Ray cluster) did not come back: a worker died more often than the
    retries allow, or the cluster went away. Nothing of the step it belonged to was committed."""


class DatasetError(TFGRPOError, ValueError):
    """A dataset file that cannot be used: unreadable, malformed, or missing a field (says where)."""


class DatasetNotFoundError(DatasetError, FileNotFoundError):
    """No dataset file at the given path."""


class TFGRPOWarning(UserWarning):
    """A value that works but lies outside the recommended range."""


def excerpt(text: str, most: int = 100) -> str:
    """Client-given text as an error message or a log line quotes it: repr, cut to `most` characters."""
    return repr(text[:most]) + ("..." if len(text) > most else "")
