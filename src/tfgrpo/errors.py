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


class TFGRPOWarning(UserWarning):
    """A value that works but lies outside the recommended range."""
