"""Strict parsing of a channel's [schedule] and [ledger] tables in rules/*.toml."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from recon.errors import ConfigError

_DURATION = re.compile(r"^(\d+)(s|m|h)$")
_UNIT = {"s": 1, "m": 60, "h": 3600}


def duration(value: Any, where: str) -> dt.timedelta:
    """``"90s"``, ``"5m"`` or ``"2h"``."""
    m = _DURATION.match(value) if isinstance(value, str) else None
    if not m or int(m.group(1)) == 0:
        raise ConfigError(f"{where}: expected a duration like '90s', '5m' or '2h', got {value!r}")
    return dt.timedelta(seconds=int(m.group(1)) * _UNIT[m.group(2)])


def _check_keys(table: dict[str, Any], allowed: set[str], required: set[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}")
    missing = sorted(required - set(table))
    if missing:
        raise ConfigError(f"{where}.{missing[0]}: required key is missing")


@dataclass(frozen=True)
class ScheduleRules:
    """When the bill is expected and how long to keep looking for it.

    The DAG runs at ``cron`` (channel time zone) for the previous business day.
    Polls are spaced ``first_delay * multiplier**n`` apart, capped at
    ``max_delay``; ``deadline`` after the scheduled time the channel-day is
    handed to a person (manual handling) and an alert fires.
    """

    cron: str
    first_delay: dt.timedelta
    multiplier: float
    max_delay: dt.timedelta
    deadline: dt.timedelta

    @classmethod
    def from_table(cls, table: Any, where: str) -> ScheduleRules:
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: expected a table")
        keys = {"cron", "first_delay", "multiplier", "max_delay", "deadline"}
        _check_keys(table, keys, keys, where)
        cron = table["cron"]
        if not isinstance(cron, str) or len(cron.split()) != 5:
            raise ConfigError(f"{where}.cron: expected a 5-field cron expression, got {cron!r}")
        mult = table["multiplier"]
        if isinstance(mult, bool) or not isinstance(mult, int | float) or not 1 <= mult <= 10:
            raise ConfigError(f"{where}.multiplier: expected a number from 1 to 10, got {mult!r}")
        rules = cls(
            cron=cron,
            first_delay=duration(table["first_delay"], f"{where}.first_delay"),
            multiplier=float(mult),
            max_delay=duration(table["max_delay"], f"{where}.max_delay"),
            deadline=duration(table["deadline"], f"{where}.deadline"),
        )
        if rules.max_delay < rules.first_delay:
            raise ConfigError(f"{where}.max_delay: shorter than first_delay")
        if rules.deadline < rules.first_delay:
            raise ConfigError(f"{where}.deadline: shorter than first_delay")
        return rules

    def delays(self) -> list[dt.timedelta]:
        """The waits between polls, shortest possible (Airflow adds up to 2x jitter),
        until their sum reaches the deadline: the retry count this gives is an upper
        bound, and the deadline check inside the task ends the wait on time."""
        out: list[dt.timedelta] = []
        total = dt.timedelta()
        step = self.first_delay
        while total < self.deadline:
            out.append(min(step, self.max_delay))
            total += out[-1]
            step = min(step * self.multiplier, self.max_delay)
        return out


@dataclass(frozen=True)
class LedgerRules:
    """Where the internal ledger export for a business day is found."""

    path: str  # format string with {date:%Y%m%d}-style fields

    @classmethod
    def from_table(cls, table: Any, where: str) -> LedgerRules:
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: expected a table")
        _check_keys(table, {"path"}, {"path"}, where)
        path = table["path"]
        if not isinstance(path, str) or not path:
            raise ConfigError(f"{where}.path: expected a path template, got {path!r}")
        try:
            path.format(date=dt.date(2024, 1, 1))
        except (KeyError, IndexError, ValueError) as exc:
            raise ConfigError(f"{where}.path: bad template {path!r}: {exc}") from None
        return cls(path=path)

    def for_day(self, day: dt.date, base: Path) -> Path:
        p = Path(self.path.format(date=day))
        return p if p.is_absolute() else base / p


# Bill rows kept for the checks across days: WeChat Pay refuses refunds of payments more
# than a year old (交易时间超过一年的订单无法提交退款), so a refund's payment is billed within a
# year before it; a margin on top. Set it per channel from its own refund period.
DEFAULT_HISTORY_DAYS = 400
MAX_HISTORY_DAYS = 3660


def _whole(table: dict[str, Any], key: str, default: int, most: int, where: str) -> int:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= most:
        raise ConfigError(f"{where}.{key}: expected a whole number 0..{most}, got {value!r}")
    return value


@dataclass(frozen=True)
class BreakRules:
    """How breaks of a channel age.

    A missing item whose time falls within ``timing_window`` before the day's
    cut-off (local midnight) is a likely timing difference: it waits as
    pending_timing for up to ``timing_days`` following bills (T+1..T+N) before it
    becomes open. The checks across days (a row billed again, refunds over what was paid)
    look back ``history_days`` days, the bill rows the store keeps (recon.bill_history).
    """

    timing_window: dt.timedelta = dt.timedelta(minutes=15)
    timing_days: int = 1
    history_days: int = DEFAULT_HISTORY_DAYS

    @classmethod
    def from_table(cls, table: Any, where: str) -> BreakRules:
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: expected a table")
        _check_keys(table, {"timing_window", "timing_days", "history_days"}, set(), where)
        days = _whole(table, "timing_days", 1, 31, where)
        history = _whole(table, "history_days", DEFAULT_HISTORY_DAYS, MAX_HISTORY_DAYS, where)
        window = table.get("timing_window")
        return cls(
            timing_window=duration(window, f"{where}.timing_window")
            if window
            else cls.timing_window,
            timing_days=days,
            history_days=history,
        )


ROUNDINGS = ("half_up", "half_even", "down", "up")


@dataclass(frozen=True)
class FeeRules:
    """The channel's fee schedule: fee = max(min_fee, round(amount * rate)) on payments;
    refunds give back round(refund * rate) when ``refund_fee`` is "proportional"."""

    rate: Decimal
    rounding: str = "half_up"
    min_fee: Decimal = Decimal(0)
    refund_fee: str = "proportional"

    @classmethod
    def from_table(cls, table: Any, where: str) -> FeeRules:
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: expected a table")
        _check_keys(table, {"rate", "rounding", "min_fee", "refund_fee"}, {"rate"}, where)

        def dec(key: str, default: str) -> Decimal:
            raw = table.get(key, default)
            if not isinstance(raw, str):
                raise ConfigError(
                    f'{where}.{key}: write decimals as strings ("0.006"), got {raw!r}'
                )
            try:
                value = Decimal(raw)
            except ArithmeticError:
                raise ConfigError(f"{where}.{key}: not a decimal: {raw!r}") from None
            if not value.is_finite() or value < 0:
                raise ConfigError(f"{where}.{key}: expected a non-negative decimal, got {raw!r}")
            return value

        rounding = table.get("rounding", "half_up")
        if rounding not in ROUNDINGS:
            raise ConfigError(
                f"{where}.rounding: expected one of {', '.join(ROUNDINGS)}, got {rounding!r}"
            )
        refund_fee = table.get("refund_fee", "proportional")
        if refund_fee not in ("proportional", "none"):
            raise ConfigError(
                f"{where}.refund_fee: expected proportional or none, got {refund_fee!r}"
            )
        rate = dec("rate", "0")
        if rate >= 1:
            raise ConfigError(f"{where}.rate: a rate is a fraction (0.006 for 0.6%), got {rate}")
        return cls(rate=rate, rounding=rounding, min_fee=dec("min_fee", "0"), refund_fee=refund_fee)


# "1GB", "512 MB", "1.5GiB": a DuckDB memory limit (recon.duck.work_connection).
MEMORY_LIMIT = re.compile(r"^\d+(\.\d+)?\s*(MB|GB|MiB|GiB)$")


@dataclass(frozen=True)
class ScaleRules:
    """How a channel-day is split for big days: ``shards`` hash shards of the key, each
    diffed by its own Airflow mapped task, then merged (1 = no split); ``memory_limit``
    caps the DuckDB work (the diff join, the shard split) of one task, beyond which it
    spills to the run's work folder."""

    shards: int = 1
    memory_limit: str = "1GB"

    @classmethod
    def from_table(cls, table: Any, where: str) -> ScaleRules:
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: expected a table")
        _check_keys(table, {"shards", "memory_limit"}, set(), where)
        shards = table.get("shards", 1)
        if isinstance(shards, bool) or not isinstance(shards, int) or not 1 <= shards <= 256:
            raise ConfigError(f"{where}.shards: expected a whole number 1..256, got {shards!r}")
        limit = table.get("memory_limit", cls.memory_limit)
        if not isinstance(limit, str) or not MEMORY_LIMIT.match(limit):
            raise ConfigError(
                f"{where}.memory_limit: expected a size like '1GB', '512MB' or '1.5GiB', "
                f"got {limit!r}"
            )
        return cls(shards=shards, memory_limit=limit)
