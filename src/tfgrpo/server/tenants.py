"""Tenants of `tfgrpo serve`: API keys, stored only as SHA-256 hashes, each mapped to one library and a
role ("user": injection, feedback, lift; "admin": also stats, lessons, rollback, export), or an operator
key (no library) that reads `/metrics`, with every library's figures, and any library's admin endpoints.

keys.toml:

    [libraries]                      # name = library file (relative paths: from this file's folder) or URL
    support = "support.db"
    billing = "billing.db"

    [[keys]]
    sha256 = "9f86d08..."            # `tfgrpo serve --hash-key KEY` prints it
    library = "support"
    role = "admin"                   # or "user" (the default)

    [[keys]]
    sha256 = "60303ae..."
    role = "operator"                # no library: /metrics and every library's admin endpoints
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..core.store import is_postgres_url, shown_target
from ..errors import ConfigError

ROLES = ("user", "admin", "operator")
_LIBRARY_NAME = re.compile(r"(?!\.+$)[A-Za-z0-9._-]{1,100}")
"""A name a URL path holds as it is (`/v1/libraries/NAME`)."""


def hash_key(key: str) -> str:
    """The hex SHA-256 of an API key, as keys.toml stores it."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class Tenant:
    library: str | None
    """None for an operator."""
    role: str = "user"

    @property
    def operator(self) -> bool:
        return self.role == "operator"

    def may_read(self, library: str, admin: bool) -> bool:
        """Whether this key reaches `library`'s endpoints (`admin`: those that need an admin key)."""
        if self.operator:
            return True
        return library == self.library and (not admin or self.role == "admin")


class Keys:
    """Hashed API keys -> tenants, and library names -> files."""

    def __init__(self, libraries: dict[str, str], keys: dict[str, Tenant]) -> None:
        self.libraries = libraries
        self._keys = keys

    @classmethod
    def load(cls, path: str | os.PathLike) -> Keys:
        import tomllib

        path = Path(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"no keys file at {path}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path} is not valid TOML: {exc}") from None
        unknown = sorted(set(data) - {"libraries", "keys"})
        if unknown:
            raise ConfigError(
                f"{path}: unknown table(s) {', '.join(unknown)}; a keys file has [libraries] and [[keys]]"
            )
        libraries = data.get("libraries")
        if not isinstance(libraries, dict) or not libraries:
            raise ConfigError(f'{path}: needs a [libraries] table of name = "file.db"')
        files: dict[str, str] = {}
        places: dict[str, str] = {}  # where each library's data lives -> its name
        for name, file in libraries.items():
            if not _LIBRARY_NAME.fullmatch(name):
                raise ConfigError(
                    f"{path}: libraries.{name!r:.60} is not a usable name (letters, digits, '.', '_' and '-', "
                    "as it appears in /v1/libraries/NAME)"
                )
            if not isinstance(file, str) or not file:
                raise ConfigError(f"{path}: libraries.{name} must be a file path (a string)")
            files[name] = file if is_postgres_url(file) or os.path.isabs(file) else str(path.parent / file)
            if os.path.isdir(files[name]):
                raise ConfigError(f"{path}: libraries.{name} is a folder, not a library file: {files[name]}")
            place = shown_target(file) if is_postgres_url(file) else os.path.realpath(files[name])
            if place in places:  # one tenant's records would be the other's
                raise ConfigError(
                    f"{path}: libraries {places[place]} and {name} are one library ({place}); give each its own"
                )
            places[place] = name
        keys: dict[str, Tenant] = {}
        entries = data.get("keys")
        if not isinstance(entries, list) or not entries:
            raise ConfigError(f"{path}: needs at least one [[keys]] entry with sha256, library and role")
        for i, entry in enumerate(entries):
            digest = entry.get("sha256") if isinstance(entry, dict) else None
            if not isinstance(digest, str) or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                raise ConfigError(f"{path}: keys[{i}].sha256 must be 64 lowercase hex digits (tfgrpo serve --hash-key)")
            extra = sorted(set(entry) - {"sha256", "library", "role"})
            if extra:
                raise ConfigError(f"{path}: keys[{i}] has unknown field(s) {', '.join(extra)} (sha256, library, role)")
            if digest == hash_key(""):
                raise ConfigError(f"{path}: keys[{i}] is the hash of an empty key, which no request can present")
            library, role = entry.get("library"), entry.get("role", "user")
            if role not in ROLES:
                raise ConfigError(f"{path}: keys[{i}].role must be 'user', 'admin' or 'operator', got {role!r}")
            if role == "operator" and library is not None:
                raise ConfigError(f"{path}: keys[{i}] is an operator key, which reaches every library: give no library")
            if role != "operator" and library not in files:
                raise ConfigError(f"{path}: keys[{i}].library {library!r} is not in [libraries] ({', '.join(files)})")
            if digest in keys:
                raise ConfigError(f"{path}: keys[{i}] repeats a key already listed")
            keys[digest] = Tenant(library, role)
        return cls(files, keys)

    def lookup(self, token: bytes | str | None) -> Tenant | None:
        """The tenant of a presented key, None for an unknown one. The dictionary lookup is by hash,
        so nothing about a stored key leaks through timing (the hash of a guess reveals nothing)."""
        if token is None:
            return None
        if isinstance(token, bytes):
            token = token.decode("utf-8", "surrogateescape")
        return self._keys.get(hash_key(token))
