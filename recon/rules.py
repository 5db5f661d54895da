"""Strict loader for rules/*.toml: unknown keys and bad values fail with the key's name."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from recon.acquire_config import SftpRules
from recon.channel_config import BreakRules, FeeRules, LedgerRules, ScaleRules, ScheduleRules
from recon.currency import CURRENCY_EXPONENTS
from recon.errors import ConfigError

DEFAULT_RULES = Path(__file__).resolve().parent.parent / "rules" / "channels.toml"
RULES_ENV = "RECON_RULES"  # a deployment's rules file, when not the default
PARSERS = ("wechatpay_v2", "alipay_detail")


@dataclass(frozen=True)
class Channel:
    name: str
    parser: str
    timezone: str
    currency: str
    settled_statuses: tuple[str, ...]
    status_map: Mapping[str, str]
    extra: Mapping[str, Any] = field(default_factory=dict)  # raw sections, as written
    sftp: SftpRules | None = None  # where the nightly fetch finds the bill
    schedule: ScheduleRules | None = None  # when it is expected, how long to wait
    ledger: LedgerRules | None = None  # where the day's ledger export is
    breaks: BreakRules = field(default_factory=BreakRules)  # timing window, T+N
    fees: FeeRules | None = None  # the fee schedule, when fees are checked
    scale: ScaleRules = field(default_factory=ScaleRules)  # hash shards for big days

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


@dataclass(frozen=True)
class Rules:
    path: Path
    store: Path
    channels: Mapping[str, Channel]
    archive: Path  # raw bills as fetched, by channel and business date
    work: Path  # per channel-day working files and published queues

    def channel(self, name: str) -> Channel:
        try:
            return self.channels[name]
        except KeyError:
            known = ", ".join(sorted(self.channels))
            raise ConfigError(f"{self.path}: unknown channel {name!r} (known: {known})") from None


# Sections that other modules validate themselves (acquisition, schedule...).
EXTRA_SECTIONS: frozenset[str] = frozenset(
    {"sftp", "schedule", "ledger", "breaks", "fees", "scale"}
)


def _take(table: dict[str, Any], key: str, where: str, kind: type, default: Any = ...) -> Any:
    name = f"{where}.{key}" if where else key
    if key not in table:
        if default is ...:
            raise ConfigError(f"{name}: required key is missing")
        return default
    value = table.pop(key)
    if not isinstance(value, kind):
        raise ConfigError(f"{name}: expected {kind.__name__}, got {value!r}")
    return value


def _no_leftovers(table: Mapping[str, Any], where: str) -> None:
    if table:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(table))}")


def _channel(name: str, raw: dict[str, Any], where: str) -> Channel:
    t = dict(raw)
    parser = _take(t, "parser", where, str)
    if parser not in PARSERS:
        raise ConfigError(
            f"{where}.parser: unknown parser {parser!r} (known: {', '.join(PARSERS)})"
        )
    tz = _take(t, "timezone", where, str)
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # "Asia" is a folder, not a zone
        raise ConfigError(f"{where}.timezone: unknown time zone {tz!r}") from None
    currency = _take(t, "currency", where, str, "CNY")
    if currency not in CURRENCY_EXPONENTS:
        raise ConfigError(f"{where}.currency: unknown ISO 4217 code {currency!r}")
    settled = _take(t, "settled_statuses", where, list, ["SUCCESS"])
    if not settled or not all(isinstance(s, str) and s for s in settled):
        raise ConfigError(f"{where}.settled_statuses: expected a non-empty list of strings")
    smap = _take(t, "status_map", where, dict, {})
    for k, v in smap.items():
        if not isinstance(v, str) or not v:
            raise ConfigError(f"{where}.status_map.{k}: expected a non-empty string, got {v!r}")
    extra = {k: t.pop(k) for k in list(t) if k in EXTRA_SECTIONS}
    _no_leftovers(t, where)
    return Channel(
        name=name,
        parser=parser,
        timezone=tz,
        currency=currency,
        settled_statuses=tuple(s.upper() for s in settled),
        status_map=dict(smap),
        extra=extra,
        sftp=SftpRules.from_table(extra["sftp"], f"{where}.sftp") if "sftp" in extra else None,
        schedule=(
            ScheduleRules.from_table(extra["schedule"], f"{where}.schedule")
            if "schedule" in extra
            else None
        ),
        ledger=(
            LedgerRules.from_table(extra["ledger"], f"{where}.ledger")
            if "ledger" in extra
            else None
        ),
        breaks=(
            BreakRules.from_table(extra["breaks"], f"{where}.breaks")
            if "breaks" in extra
            else BreakRules()
        ),
        fees=FeeRules.from_table(extra["fees"], f"{where}.fees") if "fees" in extra else None,
        scale=(
            ScaleRules.from_table(extra["scale"], f"{where}.scale")
            if "scale" in extra
            else ScaleRules()
        ),
    )


def load_rules(path: Path | None = None) -> Rules:
    path = path or Path(os.environ.get(RULES_ENV) or DEFAULT_RULES)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read rules: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    defaults = dict(_take(raw, "defaults", "", dict, {}))
    base = path.resolve().parent.parent  # relative paths are relative to the repo root
    store, archive, work = (
        base / _take(defaults, key, "defaults", str, default)
        for key, default in (
            ("store", "var/recon.duckdb"),
            ("archive", "var/archive"),
            ("work", "var/runs"),
        )
    )
    _no_leftovers(defaults, "defaults")
    chans = _take(raw, "channels", "", dict)
    _no_leftovers(raw, str(path))
    channels = {}
    for name, table in chans.items():
        if not isinstance(table, dict):
            raise ConfigError(f"channels.{name}: expected a table")
        channels[name] = _channel(name, table, f"channels.{name}")
    return Rules(path=path, store=store, channels=channels, archive=archive, work=work)
