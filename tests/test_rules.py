"""recon.rules.load_rules: strict TOML, every error names the key it is about."""

from __future__ import annotations

import datetime as dt
import itertools
import re
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recon.channel_config import LedgerRules, ScaleRules, ScheduleRules, duration
from recon.errors import ConfigError
from recon.rules import DEFAULT_RULES, RULES_ENV, load_rules

REPO = Path(__file__).resolve().parent.parent

BASE = """\
[defaults]
store = "var/recon.duckdb"

[channels.wechatpay]
parser = "wechatpay_v2"
timezone = "Asia/Shanghai"
currency = "CNY"
settled_statuses = ["SUCCESS"]

[channels.wechatpay.status_map]
SUCCESS = "SUCCESS"
NOTPAY = "PENDING"

[channels.wechatpay.sftp]
conn_id = "sftp_wechatpay"
remote_dir = "/bills/wechatpay"
filename = "wechatpay_{date:%Y%m%d}_ALL.csv"
completeness = "stable_size"
stable_seconds = 5.0

[channels.wechatpay.schedule]
cron = "0 10 * * *"
first_delay = "5m"
multiplier = 2.0
max_delay = "1h"
deadline = "8h"

[channels.wechatpay.ledger]
path = "data/sample/ledger_{date:%Y%m%d}.csv"
"""


def write_rules(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rules" / "channels.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def edited(old: str, new: str) -> str:
    """BASE with one line replaced (new may hold several lines, or none)."""
    assert BASE.count(old + "\n") == 1, old
    return BASE.replace(old + "\n", new + "\n" if new else "")


def config_error(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_rules(write_rules(tmp_path, text))
    return str(info.value)


@pytest.fixture(autouse=True)
def _no_rules_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(RULES_ENV, raising=False)


# --- what loads --------------------------------------------------------------------------


def test_the_shipped_rules_load() -> None:
    rules = load_rules()
    assert rules.path == DEFAULT_RULES
    assert set(rules.channels) == {"wechatpay", "alipay"}
    assert rules.store == REPO / "var" / "recon.duckdb"
    assert rules.store.is_absolute()
    wx = rules.channel("wechatpay")
    assert (wx.parser, wx.timezone, wx.currency) == ("wechatpay_v2", "Asia/Shanghai", "CNY")
    assert wx.tz == ZoneInfo("Asia/Shanghai")
    assert wx.settled_statuses == ("SUCCESS",)
    assert wx.status_map["NOTPAY"] == "PENDING"
    assert wx.schedule is not None
    assert wx.schedule.deadline == dt.timedelta(hours=8)
    assert wx.ledger is not None
    assert wx.ledger.for_day(dt.date(2024, 3, 1), REPO) == REPO / "data/sample/ledger_20240301.csv"
    assert wx.sftp is not None
    ali = rules.channel("alipay")
    assert ali.parser == "alipay_detail"
    assert ali.status_map == {"交易": "SUCCESS", "退款": "SUCCESS"}


def test_the_base_rules_load_and_paths_are_relative_to_the_rules_folder_parent(
    tmp_path: Path,
) -> None:
    rules = load_rules(write_rules(tmp_path, BASE))
    assert list(rules.channels) == ["wechatpay"]
    assert rules.store == tmp_path / "var" / "recon.duckdb"
    assert rules.archive == tmp_path / "var" / "archive"
    assert rules.work == tmp_path / "var" / "runs"


def test_defaults_table_and_optional_sections_may_be_left_out(tmp_path: Path) -> None:
    text = '[channels.x]\nparser = "alipay_detail"\ntimezone = "UTC"\n'
    x = load_rules(write_rules(tmp_path, text)).channel("x")
    assert (x.currency, x.settled_statuses, dict(x.status_map)) == ("CNY", ("SUCCESS",), {})
    assert (x.sftp, x.schedule, x.ledger) == (None, None, None)


def test_settled_statuses_are_upper_cased(tmp_path: Path) -> None:
    text = edited('settled_statuses = ["SUCCESS"]', 'settled_statuses = ["success", "Refund"]')
    assert load_rules(write_rules(tmp_path, text)).channel("wechatpay").settled_statuses == (
        "SUCCESS",
        "REFUND",
    )


def test_unknown_channel_names_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown channel 'paypal' \(known: alipay, wechatpay\)"):
        load_rules().channel("paypal")


def test_recon_rules_env_var_selects_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_rules(tmp_path, BASE)
    monkeypatch.setenv(RULES_ENV, str(path))
    rules = load_rules()
    assert rules.path == path
    assert list(rules.channels) == ["wechatpay"]
    # an explicit path wins over the environment
    assert load_rules(DEFAULT_RULES).path == DEFAULT_RULES


def test_recon_rules_env_var_pointing_nowhere_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "nope.toml"
    monkeypatch.setenv(RULES_ENV, str(missing))
    with pytest.raises(ConfigError, match="cannot read rules") as info:
        load_rules()
    assert str(missing) in str(info.value)


def test_empty_recon_rules_env_var_means_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(RULES_ENV, "")
    assert load_rules().path == DEFAULT_RULES


def test_invalid_toml_is_a_config_error(tmp_path: Path) -> None:
    msg = config_error(tmp_path, BASE + "[channels.wechatpay\n")
    assert "invalid TOML" in msg


# --- unknown keys, at every level -----------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "where", "key"),
    [
        (
            'store = "var/recon.duckdb"',
            'store = "var/recon.duckdb"\nstor = "x"',
            "defaults",
            "stor",
        ),
        (
            'parser = "wechatpay_v2"',
            'parser = "wechatpay_v2"\nparsr = "x"',
            "channels.wechatpay",
            "parsr",
        ),
        (
            'NOTPAY = "PENDING"',
            'NOTPAY = "PENDING"\n\n[channels.wechatpay.fess]\nrate = "0.006"',
            "channels.wechatpay",
            "fess",
        ),
        (
            'conn_id = "sftp_wechatpay"',
            'conn_id = "sftp_wechatpay"\nhost = "x"',
            "channels.wechatpay.sftp",
            "host",
        ),
        (
            "multiplier = 2.0",
            "multiplier = 2.0\nmultipler = 3.0",
            "channels.wechatpay.schedule",
            "multipler",
        ),
        (
            'path = "data/sample/ledger_{date:%Y%m%d}.csv"',
            'path = "data/sample/ledger_{date:%Y%m%d}.csv"\nformat = "csv"',
            "channels.wechatpay.ledger",
            "format",
        ),
    ],
)
def test_unknown_key_names_its_table_and_itself(
    tmp_path: Path, old: str, new: str, where: str, key: str
) -> None:
    msg = config_error(tmp_path, edited(old, new))
    assert msg.startswith(f"{where}: unknown key(s) ")
    assert key in msg


def test_unknown_top_level_key_is_named(tmp_path: Path) -> None:
    path = write_rules(tmp_path, "version = 2\n" + BASE)
    with pytest.raises(ConfigError) as info:
        load_rules(path)
    assert str(info.value) == f"{path}: unknown key(s) version"


def test_unknown_top_level_table_is_named(tmp_path: Path) -> None:
    msg = config_error(tmp_path, BASE + "\n[channel.alipay]\nparser = 'alipay_detail'\n")
    assert msg.endswith("unknown key(s) channel")


# --- bad values ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "key_path"),
    [
        ('timezone = "Asia/Shanghai"', 'timezone = "Mars/Olympus"', "channels.wechatpay.timezone"),
        ('timezone = "Asia/Shanghai"', 'timezone = ""', "channels.wechatpay.timezone"),
        ('timezone = "Asia/Shanghai"', 'timezone = "../etc/passwd"', "channels.wechatpay.timezone"),
        ('timezone = "Asia/Shanghai"', "timezone = 8", "channels.wechatpay.timezone"),
        ('timezone = "Asia/Shanghai"', "", "channels.wechatpay.timezone"),
        ('currency = "CNY"', 'currency = "RMB"', "channels.wechatpay.currency"),
        ('currency = "CNY"', 'currency = "cny"', "channels.wechatpay.currency"),
        ('parser = "wechatpay_v2"', 'parser = "wechatpay_v3"', "channels.wechatpay.parser"),
        ('parser = "wechatpay_v2"', "", "channels.wechatpay.parser"),
        (
            'settled_statuses = ["SUCCESS"]',
            "settled_statuses = []",
            "channels.wechatpay.settled_statuses",
        ),
        (
            'settled_statuses = ["SUCCESS"]',
            'settled_statuses = "SUCCESS"',
            "channels.wechatpay.settled_statuses",
        ),
        (
            'settled_statuses = ["SUCCESS"]',
            'settled_statuses = ["SUCCESS", ""]',
            "channels.wechatpay.settled_statuses",
        ),
        ('NOTPAY = "PENDING"', "NOTPAY = 1", "channels.wechatpay.status_map.NOTPAY"),
        ('NOTPAY = "PENDING"', 'NOTPAY = ""', "channels.wechatpay.status_map.NOTPAY"),
        ('NOTPAY = "PENDING"', 'NOTPAY = ["PENDING"]', "channels.wechatpay.status_map.NOTPAY"),
        ('store = "var/recon.duckdb"', "store = 1", "defaults.store"),
        ('first_delay = "5m"', 'first_delay = "5x"', "channels.wechatpay.schedule.first_delay"),
        ('first_delay = "5m"', 'first_delay = "0m"', "channels.wechatpay.schedule.first_delay"),
        ('first_delay = "5m"', 'first_delay = "5 m"', "channels.wechatpay.schedule.first_delay"),
        ('first_delay = "5m"', 'first_delay = "1.5m"', "channels.wechatpay.schedule.first_delay"),
        ('first_delay = "5m"', "first_delay = 300", "channels.wechatpay.schedule.first_delay"),
        ('first_delay = "5m"', "", "channels.wechatpay.schedule.first_delay"),
        ('max_delay = "1h"', 'max_delay = "4m"', "channels.wechatpay.schedule.max_delay"),
        ('deadline = "8h"', 'deadline = "1m"', "channels.wechatpay.schedule.deadline"),
        ("multiplier = 2.0", "multiplier = 20", "channels.wechatpay.schedule.multiplier"),
        ("multiplier = 2.0", "multiplier = 0.5", "channels.wechatpay.schedule.multiplier"),
        ("multiplier = 2.0", "multiplier = true", "channels.wechatpay.schedule.multiplier"),
        ("multiplier = 2.0", 'multiplier = "2"', "channels.wechatpay.schedule.multiplier"),
        ('cron = "0 10 * * *"', 'cron = "0 10 * *"', "channels.wechatpay.schedule.cron"),
        (
            'path = "data/sample/ledger_{date:%Y%m%d}.csv"',
            'path = "ledger_{day:%Y%m%d}.csv"',
            "channels.wechatpay.ledger.path",
        ),
        (
            'path = "data/sample/ledger_{date:%Y%m%d}.csv"',
            'path = ""',
            "channels.wechatpay.ledger.path",
        ),
        (
            'completeness = "stable_size"',
            'completeness = "eventually"',
            "channels.wechatpay.sftp.completeness",
        ),
        ('conn_id = "sftp_wechatpay"', "conn_id = 7", "channels.wechatpay.sftp.conn_id"),
    ],
)
def test_bad_value_names_the_key_path(tmp_path: Path, old: str, new: str, key_path: str) -> None:
    msg = config_error(tmp_path, edited(old, new))
    assert msg.startswith(key_path + ":"), msg


def test_misspelt_section_and_channel_that_is_not_a_table(tmp_path: Path) -> None:
    text = BASE.replace("[channels.wechatpay.schedule]\n", "[channels.wechatpay.schedules]\n")
    assert config_error(tmp_path, text).startswith("channels.wechatpay: unknown key(s) schedules")
    assert config_error(tmp_path, "[channels]\nwechatpay = 1\n").startswith("channels.wechatpay:")


@pytest.mark.parametrize("zone", ["Asia", "America"])
def test_time_zone_naming_a_region_folder_is_a_config_error(tmp_path: Path, zone: str) -> None:
    msg = config_error(tmp_path, edited('timezone = "Asia/Shanghai"', f'timezone = "{zone}"'))
    assert msg.startswith("channels.wechatpay.timezone:")


@pytest.mark.parametrize(
    ("text", "key"),
    [('[defaults]\nstore = "x"\n', "channels"), ("defaults = 1\n[channels]\n", "defaults")],
)
def test_missing_or_mistyped_top_level_table_names_its_own_path(
    tmp_path: Path, text: str, key: str
) -> None:
    msg = config_error(tmp_path, text)
    assert msg.startswith(f"{key}:")
    assert f"{key}.{key}" not in msg


# --- durations and the polling schedule ---------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90), ("5m", 300), ("2h", 7200), ("1s", 1), ("48h", 172800)]
)
def test_duration(text: str, seconds: int) -> None:
    assert duration(text, "k") == dt.timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["5x", "5", "m", "-5m", "5M", "5d", " 5m", "0s", "1.5h", ""])
def test_bad_duration_names_the_key(text: str) -> None:
    with pytest.raises(ConfigError, match=r"^a\.b: expected a duration"):
        duration(text, "a.b")


def schedule(first: str, mult: float, max_delay: str, deadline: str) -> ScheduleRules:
    table = {
        "cron": "0 10 * * *",
        "first_delay": first,
        "multiplier": mult,
        "max_delay": max_delay,
        "deadline": deadline,
    }
    return ScheduleRules.from_table(table, "s")


def test_shipped_schedule_delays() -> None:
    m = dt.timedelta(minutes=1)
    assert (
        schedule("5m", 2.0, "1h", "8h").delays() == [5 * m, 10 * m, 20 * m, 40 * m] + [60 * m] * 7
    )


def test_delays_with_multiplier_one_are_constant() -> None:
    assert schedule("10m", 1, "1h", "30m").delays() == [dt.timedelta(minutes=10)] * 3


def test_delays_when_first_delay_reaches_the_deadline() -> None:
    assert schedule("5m", 3, "5m", "5m").delays() == [dt.timedelta(minutes=5)]


@settings(max_examples=150, deadline=None)
@given(
    first=st.integers(1, 3600),
    mult=st.one_of(st.integers(1, 10), st.floats(1.0, 10.0, allow_nan=False)),
    cap_extra=st.integers(0, 7200),
    deadline_extra=st.integers(0, 40000),
)
def test_delays_grow_are_capped_and_reach_the_deadline(
    first: int, mult: float, cap_extra: int, deadline_extra: int
) -> None:
    s = schedule(f"{first}s", mult, f"{first + cap_extra}s", f"{first + deadline_extra}s")
    d = s.delays()
    assert d, "at least one poll"
    assert d[0] == s.first_delay
    assert all(x <= s.max_delay for x in d)
    assert all(a <= b for a, b in itertools.pairwise(d))
    for a, b in itertools.pairwise(d):
        if b < s.max_delay:  # not capped: grown by exactly the multiplier
            assert b == a * s.multiplier
    total = sum(d, dt.timedelta())
    assert total >= s.deadline
    assert total - d[-1] < s.deadline  # no poll more than needed


def test_many_polls_at_the_cap_do_not_overflow() -> None:
    s = schedule("30s", 2, "5m", "12h")
    d = s.delays()
    assert len(d) == 4 + 143  # 30s, 1m, 2m, 4m, then 5m until 12h is reached
    assert sum(d, dt.timedelta()) >= dt.timedelta(hours=12)


def test_ledger_rules_path_template(tmp_path: Path) -> None:
    r = LedgerRules.from_table({"path": "exports/{date:%Y-%m-%d}/ledger.parquet"}, "l")
    assert (
        r.for_day(dt.date(2024, 3, 1), tmp_path) == tmp_path / "exports/2024-03-01/ledger.parquet"
    )
    absolute = LedgerRules.from_table({"path": "/data/l_{date:%Y%m%d}.csv"}, "l")
    assert absolute.for_day(dt.date(2024, 3, 1), tmp_path) == Path("/data/l_20240301.csv")


def test_fee_rules_are_strict(tmp_path: Path) -> None:
    for table, expected in (
        (
            "[channels.wechatpay.fees]\nrate = 0.006",
            "channels.wechatpay.fees.rate: write decimals as strings",
        ),
        (
            '[channels.wechatpay.fees]\nrate = "6"',
            "channels.wechatpay.fees.rate: a rate is a fraction",
        ),
        (
            '[channels.wechatpay.fees]\nrate = "0.006"\nrounding = "nearest"',
            "channels.wechatpay.fees.rounding",
        ),
        ("[channels.wechatpay.breaks]\ntiming_days = -1", "channels.wechatpay.breaks.timing_days"),
        (
            '[channels.wechatpay.breaks]\nhistory_days = "1y"',
            "channels.wechatpay.breaks.history_days: expected a whole number 0..3660",
        ),
        (
            "[channels.wechatpay.breaks]\nhistory_days = 4000",
            "channels.wechatpay.breaks.history_days: expected a whole number 0..3660",
        ),
        (
            '[channels.wechatpay.breaks]\ntiming_windw = "5m"',
            "channels.wechatpay.breaks: unknown key(s) timing_windw",
        ),
    ):
        text = (REPO / "rules" / "channels.toml").read_text("utf-8")
        text = re.sub(r"\[channels\.wechatpay\.(fees|breaks)\][^\[]*", "", text)
        msg = config_error(tmp_path, text + "\n" + table + "\n")
        assert msg.startswith(expected), msg


def test_history_days_default_and_set(tmp_path: Path) -> None:
    assert load_rules(write_rules(tmp_path, BASE)).channel("wechatpay").breaks.history_days == 400
    text = BASE + "\n[channels.wechatpay.breaks]\nhistory_days = 35\n"
    breaks = load_rules(write_rules(tmp_path, text)).channel("wechatpay").breaks
    assert (breaks.history_days, breaks.timing_days) == (35, 1)


def test_scale_rules_shards_and_memory_limit(tmp_path: Path) -> None:
    x = load_rules(write_rules(tmp_path, BASE)).channel("wechatpay")
    assert (x.scale.shards, x.scale.memory_limit) == (1, "1GB")
    text = BASE + '\n[channels.wechatpay.scale]\nshards = 4\nmemory_limit = "1.5GiB"\n'
    x = load_rules(write_rules(tmp_path, text)).channel("wechatpay")
    assert (x.scale.shards, x.scale.memory_limit) == (4, "1.5GiB")
    for good in ("512MB", "2 GB", "768MiB"):
        assert ScaleRules.from_table({"memory_limit": good}, "s").memory_limit == good
    for bad in ("1G", "1 TB", "-1GB", "lots", "1GB; SET threads=1", 1024):
        text = BASE + f"\n[channels.wechatpay.scale]\nmemory_limit = {bad!r}\n".replace("'", '"')
        msg = config_error(tmp_path, text)
        assert msg.startswith("channels.wechatpay.scale.memory_limit: expected a size"), msg
    msg = config_error(tmp_path, BASE + "\n[channels.wechatpay.scale]\nmemory = 1\n")
    assert msg.startswith("channels.wechatpay.scale: unknown key(s) memory"), msg
