"""Channel bill parsers: one module per real format, all behind ``BillParser``."""

from __future__ import annotations

from parsers.base import BillParser, ParseContext, ParsedBill, TotalCheck


def get_parser(name: str) -> BillParser:
    """The parser registered under ``name`` (as named in rules/)."""
    from parsers.alipay import AlipayBillParser
    from parsers.wechatpay import WechatPayV2Parser

    registry: dict[str, BillParser] = {
        WechatPayV2Parser.name: WechatPayV2Parser(),
        AlipayBillParser.name: AlipayBillParser(),
    }
    try:
        return registry[name]
    except KeyError:
        raise KeyError(f"unknown parser {name!r}; known: {', '.join(sorted(registry))}") from None


__all__ = ["BillParser", "ParseContext", "ParsedBill", "TotalCheck", "get_parser"]
