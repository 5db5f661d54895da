"""The ledger's created_at text -> a UTC instant (null when it has no valid UTC offset).

The reference is a regex chain that brings the ISO 8601 variants (Z, +08, +0800,
space, no seconds) to ``...+HH:MM`` and parses that with chrono's ``%.f%:z``, which
costs about a microsecond a row. The common spellings (``2024-03-01T12:00:00+08:00``
and ``...Z``) take a fast path instead: polars parses their first 19 characters with a
plain format, which skips chrono, and the offset is subtracted as minutes. Any row the
fast path does not take or cannot parse goes the reference way, so the result is the
same row for row.
"""

from __future__ import annotations

import re

import polars as pl

from recon.few_values import distinct, lookup

ISO_OFFSET = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?[+-]\d{2}:\d{2}$"
# Exactly what _exact_normalised makes of them: kept, and Z -> +00:00.
_ISO_Z = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z$"
# The fast path's rows: ASCII digits, whole seconds, then an offset +HH:MM or Z.
_FAST_TIME = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}"
_OFFSET = re.compile(r"[+-][0-9]{2}:[0-9]{2}")
_ISO_FORMAT = "%Y-%m-%dT%H:%M:%S%.f%:z"


def created_at_utc(text: pl.Series) -> pl.Series:
    """created_at as written (no nulls) -> Datetime("us", "UTC"), null when invalid."""
    out = _fast_utc(text)
    redo = out.is_null().arg_true()
    if redo.len():
        frame = text.rename("v").to_frame()[redo]
        out = out.scatter(redo, frame.select(_reference_utc(pl.col("v"))).to_series())
    return out.rename(text.name)


def _fast_utc(text: pl.Series) -> pl.Series:
    """The instant of a row in the _FAST form whose offset chrono accepts; null otherwise."""
    tail = text.str.slice(19)  # the offset, when the first 19 characters are the time
    # Only "Z" and "+HH:MM" can be offsets: fractions of seconds (".123Z") would make
    # many distinct tails.
    size = tail.str.len_bytes()
    shaped = tail.filter((size == 1) | ((size == 6) & (tail.str.slice(3, 1) == ":")))
    offsets = {t: us for t in distinct(shaped) if (us := _east_us(t)) is not None}
    east = lookup(tail, offsets, pl.Int64())
    # No cache: nearly every value differs, and the cache would double the cost.
    local = text.str.slice(0, 19).str.to_datetime(
        "%Y-%m-%dT%H:%M:%S", strict=False, time_unit="us", cache=False
    )
    utc = (local.cast(pl.Int64) - east).cast(pl.Datetime("us", "UTC"))
    return utc.set(~text.str.contains(_FAST_TIME), None)


def _east_us(tail: str | None) -> int | None:
    """``Z`` or ``+HH:MM`` in microseconds east of UTC; None for anything else, and for
    the offsets chrono refuses (24 hours or more, 60 minutes or more)."""
    if tail == "Z":
        return 0
    if tail is None or not _OFFSET.fullmatch(tail):
        return None
    hours, minutes = int(tail[1:3]), int(tail[4:6])
    if hours >= 24 or minutes >= 60:
        return None
    east = (hours * 60 + minutes) * 60_000_000
    return -east if tail[0] == "-" else east


def _reference_utc(v: pl.Expr) -> pl.Expr:
    iso = _normalised_created_at(v)
    parsed = iso.str.to_datetime(_ISO_FORMAT, strict=False, time_unit="us", time_zone="UTC")
    return pl.when(iso.str.contains(ISO_OFFSET)).then(parsed)


def _normalised_created_at(col: pl.Expr) -> pl.Expr:
    """Bring the ISO 8601 variants (Z, +08, +0800, space, no seconds) to one form.

    Values already in that form stay as they are and ``...Z`` becomes ``...+00:00``
    without the regex chain, which runs only for the other spellings."""
    return col.map_batches(_normalised_series, return_dtype=pl.String, is_elementwise=True)


def _normalised_series(s: pl.Series) -> pl.Series:
    frame = s.cast(pl.String).rename("v").to_frame()
    v = pl.col("v")
    kinds = frame.select(
        v.str.contains(ISO_OFFSET).fill_null(False).alias("iso"),
        v.str.contains(_ISO_Z).fill_null(False).alias("z"),
    )
    iso, z = kinds.get_column("iso"), kinds.get_column("z")
    if iso.all():
        return s
    out = frame.select(pl.when(z).then(v.str.head(-1) + pl.lit("+00:00")).otherwise(v)).to_series()
    others = (~(iso | z)).arg_true()
    if others.len():
        out = out.scatter(others, frame[others].select(_exact_normalised(v)).to_series())
    return out.rename(s.name)


def _exact_normalised(col: pl.Expr) -> pl.Expr:
    """The reference normalisation behind :func:`_normalised_created_at`."""
    s = col.str.strip_chars().str.replace(r"^(\d{4}-\d{2}-\d{2})[ T]", "${1}T")
    s = s.str.replace(r"(?i)z$", "+00:00").str.replace(r"([+-]\d{2})$", "${1}:00")
    s = s.str.replace(r"([+-]\d{2})(\d{2})$", "${1}:${2}")
    return s.str.replace(r"T(\d{2}:\d{2})([+-])", "T${1}:00${2}")
