"""Errors that end a run with exit code 2 and a one-line message naming the file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class InputError(Exception):
    """Bad input: the message names the file and, when known, line and column."""

    path: Path | str
    message: str
    line: int | None = None
    column: str | None = None

    def __str__(self) -> str:
        where = str(self.path)
        if self.line is not None:
            where += f":{self.line}"
        if self.column is not None:
            where += f" column {self.column!r}"
        return f"{where}: {self.message}"


class ControlTotalsError(InputError):
    """The bill's own summary does not match its rows: nothing may be reconciled."""


class ConfigError(Exception):
    """A rules file is invalid; the message names the key."""


# Fetch errors live here, away from paramiko, so the DAG's retry policy can name them
# without importing an SSH stack at DAG-parse time.
class FetchError(Exception):
    """Fetching a bill failed."""


class PermanentFetchError(FetchError):
    """Retrying will not help: fail the task without retry."""


class HostKeyError(PermanentFetchError):
    """The server's host key is unknown or differs from the expected one."""


class AuthError(PermanentFetchError):
    """The server refused our credentials, or the client key cannot be loaded."""


class TransientFetchError(FetchError):
    """Network or server trouble that a later attempt may not meet."""
