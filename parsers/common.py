"""Helpers shared by the channel parsers: decoding, lines, local times, quarantine."""

from __future__ import annotations

import codecs
import gzip
import zipfile
from pathlib import Path

import polars as pl

from recon.checks import RowCheck, apply_checks
from recon.errors import InputError
from recon.schema import COLUMNS, QUARANTINE_SCHEMA, validate

__all__ = ["RowCheck", "apply_checks"]

GZIP_MAGIC = b"\x1f\x8b"
ZIP_MAGIC = b"PK\x03\x04"


def read_bytes(path: Path) -> bytes:
    """File bytes, gunzipped when gzip; an unreadable file is an InputError."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(path, f"cannot read file: {exc.strerror or exc}") from None
    if data[:2] == GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise InputError(path, f"corrupt or truncated gzip: {exc}") from None
    return data


def decode(path: Path, data: bytes, encodings: tuple[str, ...] = ("utf-8-sig", "gb18030")) -> str:
    """Decode with the first encoding that fits; GB18030 is a superset of GBK."""
    for enc in encodings:
        try:
            return data.decode(enc)
        except UnicodeDecodeError:
            continue
    raise InputError(path, f"not text in any of {', '.join(encodings)}")


def split_lines(text: str) -> pl.DataFrame:
    """One row per physical line: ``line`` (1-based) and ``text`` (no line ending)."""
    return _lines(pl.Series("text", [text]))


def read_lines(
    path: Path, data: bytes, encodings: tuple[str, ...] = ("utf-8-sig", "gb18030")
) -> pl.DataFrame:
    """``split_lines(decode(path, data, encodings))``, faster for UTF-8: the bytes go to
    polars as they are (validated there as strictly as Python's codec does) instead of
    being decoded into a Python str and encoded back."""
    if encodings and encodings[0] in ("utf-8-sig", "utf-8"):
        sig = encodings[0] == "utf-8-sig" and data.startswith(codecs.BOM_UTF8)
        body = memoryview(data)[len(codecs.BOM_UTF8) :] if sig else data
        try:
            text = pl.Series("text", [bytes(body)], dtype=pl.Binary).cast(pl.String)
        except pl.exceptions.ComputeError:  # not UTF-8: try the encodings in order
            pass
        else:
            return _lines(text)
    # Encoded by hand: faster than polars taking the str (a decoder never yields surrogates).
    utf8 = decode(path, data, encodings).encode("utf-8")
    return _lines(pl.Series("text", [utf8], dtype=pl.Binary).cast(pl.String))


def _lines(text: pl.Series) -> pl.DataFrame:
    s = text.rename("text").str.split("\n").explode()
    df = pl.DataFrame(s).with_columns(pl.col("text").str.strip_suffix("\r"))
    return df.with_row_index("line", offset=1).with_columns(pl.col("line").cast(pl.Int64))


def local_to_utc(value: pl.Expr, fmt: str, tz: str) -> pl.Expr:
    """Local wall-clock string in ``tz`` -> UTC datetime[us]; null if unparseable."""
    return (
        value.str.strptime(pl.Datetime("us"), fmt, strict=False)
        .dt.replace_time_zone(tz, ambiguous="earliest", non_existent="null")
        .dt.convert_time_zone("UTC")
    )


def business_date(utc: pl.Expr, tz: str) -> pl.Expr:
    return utc.dt.convert_time_zone(tz).dt.date()


def split_quarantine(
    staged: pl.DataFrame, checks: list[RowCheck], path: Path
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Route rows failing a check, then the pandera model, to quarantine.

    ``staged`` holds the standard columns plus ``source_line`` and ``raw``.
    """
    good, bad = apply_checks(staged, checks)
    quarantine = bad.select(
        pl.col("source_file"),
        pl.col("source_line"),
        pl.col("_q_col").alias("column"),
        pl.col("_q_why").alias("reason"),
        pl.col("raw"),
    )
    valid, invalid = validate(good.select(COLUMNS))
    if invalid.height:
        raws = good.select("source_line", "raw")
        invalid = invalid.drop("raw").join(raws, on="source_line", how="left")
        quarantine = pl.concat([quarantine, invalid.select(QUARANTINE_SCHEMA)])
    return valid, quarantine.cast(QUARANTINE_SCHEMA).sort("source_line")  # type: ignore[arg-type]


ZIP_UTF8_NAME_FLAG = 0x800


def zip_entry_name(info: zipfile.ZipInfo) -> str:
    """Alipay writes GBK names without the UTF-8 flag; zipfile has read them as cp437."""
    if info.flag_bits & ZIP_UTF8_NAME_FLAG:
        return info.filename
    try:
        return info.filename.encode("cp437").decode("gb18030")
    except UnicodeError:
        return info.filename
