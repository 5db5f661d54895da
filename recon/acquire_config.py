"""Strict parser for a channel's `[channels.<name>.sftp]` table: where and how its bill is fetched."""

from __future__ import annotations

import datetime as dt
import math
import posixpath
import string
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from recon.errors import ConfigError

Completeness = Literal["stable_size", "marker"]
COMPLETENESS: tuple[Completeness, ...] = ("stable_size", "marker")
# Checksum sidecar suffix -> hashlib name (".sha256" and ".sha256sum" both mean sha256).
CHECKSUM_ALGORITHMS = ("sha256", "sha512", "sha1", "md5")

_KEYS = frozenset(
    {
        "conn_id",
        "remote_dir",
        "filename",
        "completeness",
        "marker_suffix",
        "stable_seconds",
        "checksum_suffix",
    }
)


@dataclass(frozen=True)
class SftpRules:
    conn_id: str  # Airflow connection id (or the name the caller maps to an endpoint)
    remote_dir: str
    filename: str  # format string over the business date, e.g. "x_{date:%Y%m%d}.csv"
    completeness: Completeness
    marker_suffix: str = ".ok"
    stable_seconds: float = 2.0
    checksum_suffix: str | None = None

    @classmethod
    def from_table(cls, table: Mapping[str, Any], where: str) -> SftpRules:
        if not isinstance(table, Mapping):
            raise ConfigError(f"{where}: expected a table, got {table!r}")
        unknown = set(table) - _KEYS
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")

        conn_id = _text(table, "conn_id", where)
        remote_dir = _text(table, "remote_dir", where)
        filename = _text(table, "filename", where)
        _check_filename(filename, f"{where}.filename")

        completeness = _text(table, "completeness", where)
        if completeness not in COMPLETENESS:
            raise ConfigError(
                f"{where}.completeness: expected one of {', '.join(COMPLETENESS)}, "
                f"got {completeness!r}"
            )
        # Options of the other completeness mode are almost certainly a mistake.
        if completeness != "marker" and "marker_suffix" in table:
            raise ConfigError(f"{where}.marker_suffix: only used with completeness = 'marker'")
        if completeness != "stable_size" and "stable_seconds" in table:
            raise ConfigError(
                f"{where}.stable_seconds: only used with completeness = 'stable_size'"
            )
        marker_suffix = _text(table, "marker_suffix", where, ".ok")
        _check_suffix(marker_suffix, f"{where}.marker_suffix")

        stable = table.get("stable_seconds", 2.0)
        if isinstance(stable, bool) or not isinstance(stable, int | float):
            raise ConfigError(f"{where}.stable_seconds: expected a number, got {stable!r}")
        if not (math.isfinite(stable) and stable > 0):
            raise ConfigError(f"{where}.stable_seconds: expected a positive number, got {stable!r}")

        checksum_suffix: str | None = None
        if "checksum_suffix" in table:
            checksum_suffix = _text(table, "checksum_suffix", where)
            _check_suffix(checksum_suffix, f"{where}.checksum_suffix")
            if checksum_algorithm(checksum_suffix) is None:
                raise ConfigError(
                    f"{where}.checksum_suffix: cannot tell the hash from {checksum_suffix!r} "
                    f"(expected a suffix naming one of {', '.join(CHECKSUM_ALGORITHMS)}, "
                    "e.g. '.sha256')"
                )

        return cls(
            conn_id=conn_id,
            remote_dir=remote_dir,
            filename=filename,
            completeness=completeness,
            marker_suffix=marker_suffix,
            stable_seconds=float(stable),
            checksum_suffix=checksum_suffix,
        )

    def remote_name(self, business_date: dt.date) -> str:
        return self.filename.format(date=business_date)

    def remote_path(self, business_date: dt.date) -> str:
        return posixpath.join(self.remote_dir, self.remote_name(business_date))

    def marker_name(self, business_date: dt.date) -> str:
        return self.remote_name(business_date) + self.marker_suffix

    def checksum_name(self, business_date: dt.date) -> str | None:
        if self.checksum_suffix is None:
            return None
        return self.remote_name(business_date) + self.checksum_suffix


def checksum_algorithm(suffix: str) -> str | None:
    """The hashlib name a sidecar suffix stands for: ".sha256" / ".SHA256SUM" -> "sha256"."""
    name = suffix.rsplit(".", 1)[-1].lower().removesuffix("sum")
    return name if name in CHECKSUM_ALGORITHMS else None


def _text(table: Mapping[str, Any], key: str, where: str, default: str | None = None) -> str:
    if key not in table:
        if default is None:
            raise ConfigError(f"{where}.{key}: required key is missing")
        return default
    value = table[key]
    if not isinstance(value, str):
        raise ConfigError(f"{where}.{key}: expected a string, got {value!r}")
    if not value.strip():
        raise ConfigError(f"{where}.{key}: must not be empty")
    return value


def _check_suffix(suffix: str, where: str) -> None:
    if "/" in suffix:
        raise ConfigError(f"{where}: must not contain '/', got {suffix!r}")


def _check_filename(pattern: str, where: str) -> None:
    fields = [f for _, f, _, _ in string.Formatter().parse(pattern) if f is not None]
    if not fields:
        raise ConfigError(
            f"{where}: must contain the business date, e.g. '{{date:%Y%m%d}}', got {pattern!r}"
        )
    day = dt.date(2001, 2, 3)
    try:
        name = pattern.format(date=day)
        next_name = pattern.format(date=day + dt.timedelta(days=1))
    except (KeyError, IndexError, ValueError, AttributeError) as exc:
        raise ConfigError(
            f"{where}: bad format string {pattern!r} (only the field 'date' exists): {exc}"
        ) from None
    if name == next_name:
        # Without the day in the name, yesterday's bill would be taken for today's.
        raise ConfigError(f"{where}: the name must change from one day to the next: {pattern!r}")
    if "/" in name or name in (".", ".."):
        raise ConfigError(f"{where}: must be a plain file name (put directories in remote_dir)")
