"""Mask personal data (buyer ids, account names) before it leaves in a report.

A column is personal when its name says so (buyer, account, user, 对方账户, 用户标识...).
Masking keeps just enough to tell two values apart at a glance (``oU****6o``) and is
idempotent, so masking twice on the way out is harmless.
"""

from __future__ import annotations

import re

import polars as pl

_PERSONAL = re.compile(
    r"buyer|account|user|payer|openid|open_id|对方|用户|买家|付款人|账户|账号", re.IGNORECASE
)
# Alipay writes the counterparty as ``name(e-mail or phone)``: ``*津水(602***@qq.com)``.
_NAME_CONTACT = re.compile(r"^(?P<name>[^()（）]*)[(（](?P<contact>[^()（）]*)[)）]$")
_STARS = "****"


def is_personal(column: str) -> bool:
    return _PERSONAL.search(column) is not None


def _mask_token(text: str) -> str:
    """Long ids keep their first and last two characters; short ones only the first."""
    if not text:
        return text
    if len(text) >= 8:
        return text[:2] + _STARS + text[-2:]
    if len(text) >= 5:
        return text[0] + _STARS
    return _STARS


def _mask_contact(contact: str) -> str:
    user, at, domain = contact.partition("@")
    return _mask_token(user) + at + domain if at else _mask_token(contact)


def mask(value: str) -> str:
    text = value.strip()
    m = _NAME_CONTACT.match(text)
    if m:  # a name says more than it hides: none of it is kept
        name = "**" if m["name"] else ""
        return f"{name}({_mask_contact(m['contact'])})"
    return _mask_contact(text)


def mask_if_personal(column: str, value: str | None) -> str | None:
    return mask(value) if value is not None and is_personal(column) else value


def _mask_expr(col: pl.Expr) -> pl.Expr:
    return col.cast(pl.String).map_elements(mask, return_dtype=pl.String)


def mask_frame(df: pl.DataFrame) -> pl.DataFrame:
    """Mask personal columns, and the two sides' values of a mismatch on a personal field."""
    masked = [_mask_expr(pl.col(c)).alias(c) for c in df.columns if is_personal(c)]
    if "field" in df.columns:
        personal_field = pl.col("field").map_elements(is_personal, return_dtype=pl.Boolean)
        masked += [
            pl.when(personal_field).then(_mask_expr(pl.col(c))).otherwise(pl.col(c)).alias(c)
            for c in ("ledger_value", "channel_value")
            if c in df.columns
        ]
    return df.with_columns(masked) if masked else df
