"""Strict loader for rules/*.toml: unknown keys and bad values fail with the key's name."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from recon.errors import ConfigError
from recon.money import CURRENCY_EXPONENTS

DEFAULT_RULES = Path(__file__).resolve().parent.parent / "rules" / "channels.toml"
PARSERS = ("wechatpay_v2", "alipay_detail")


@dataclass(frozen=True)
class Channel:
    name: str
    parser: str
    timezone: str
    currency: str
    settled_statuses: tuple[str, ...]
    status_map: Mapping[str, str]
    extra: Mapping[str, Any] = field(default_factory=dict)  # sections owned by other modules

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


@dataclass(frozen=True)
class Rules:
    path: Path
    store: Path
    channels: Mapping[str, Channel]

    def channel(self, name: str) -> Channel:
        try:
            return self.channels[name]
        except KeyError:
            known = ", ".join(sorted(self.channels))
            raise ConfigError(f"{self.path}: unknown channel {name!r} (known: {known})") from None


# Sections that other modules validate themselves (acquisition, schedule...).
EXTRA_SECTIONS: frozenset[str] = frozenset({"sftp", "schedule", "ledger"})


def _take(table: dict[str, Any], key: str, where: str, kind: type, default: Any = ...) -> Any:
    if key not in table:
        if default is ...:
            raise ConfigError(f"{where}.{key}: required key is missing")
        return default
    value = table.pop(key)
    if not isinstance(value, kind):
        raise ConfigError(f"{where}.{key}: expected {kind.__name__}, got {value!r}")
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
    except (ZoneInfoNotFoundError, ValueError):
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
    )


def load_rules(path: Path | None = None) -> Rules:
    path = path or DEFAULT_RULES
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read rules: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    defaults = dict(_take(raw, "defaults", "defaults", dict, {}))
    store = Path(_take(defaults, "store", "defaults", str, "var/recon.duckdb"))
    _no_leftovers(defaults, "defaults")
    chans = _take(raw, "channels", "channels", dict)
    _no_leftovers(raw, str(path))
    channels = {}
    for name, table in chans.items():
        if not isinstance(table, dict):
            raise ConfigError(f"channels.{name}: expected a table")
        channels[name] = _channel(name, table, f"channels.{name}")
    if not store.is_absolute():
        store = path.resolve().parent.parent / store
    return Rules(path=path, store=store, channels=channels)
