"""Channel re-query: ask the channel about one order before a break is raised.

Real channel clients (WeChat Pay orderquery, Alipay trade.query...) implement
``ChannelQuery``; the simulator answers from a JSON file and serves tests and
the demo. An answer that explains a break (the channel closed the order, say) is
recorded on the break.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from recon.errors import ConfigError


@dataclass(frozen=True)
class QueryAnswer:
    status: str  # the channel's status for the order or refund, in our vocabulary
    note: str = ""
    explains: bool = False  # the answer accounts for the break by itself
    reason_code: str = ""  # e.g. CHANNEL_CLOSED, CHANNEL_PROCESSING


class ChannelQuery(Protocol):
    def query(
        self, channel: str, txn_type: str, merchant_order_id: str, merchant_refund_id: str
    ) -> QueryAnswer | None: ...


# Channel statuses that explain an item our ledger has and the bill lacks.
_EXPLAINING = {"CLOSED": "CHANNEL_CLOSED", "REVOKED": "CHANNEL_REVOKED", "NOTPAY": "CHANNEL_NOTPAY",
               "PROCESSING": "CHANNEL_PROCESSING", "FAILED": "CHANNEL_FAILED"}  # fmt: skip


class SimulatedChannel:
    """Answers from a JSON file: {"<channel>/<txn_type>/<order>/<refund>": "STATUS" or
    {"status": ..., "note": ...}}. Unknown orders get no answer (None)."""

    def __init__(self, answers: dict[str, str | dict[str, str]]) -> None:
        self._answers = answers
        self.asked: list[tuple[str, str, str, str]] = []

    @classmethod
    def from_file(cls, path: Path) -> SimulatedChannel:
        try:
            data = json.loads(path.read_text("utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{path}: cannot read re-query answers: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a JSON object of answers")
        return cls(data)

    def query(
        self, channel: str, txn_type: str, merchant_order_id: str, merchant_refund_id: str
    ) -> QueryAnswer | None:
        self.asked.append((channel, txn_type, merchant_order_id, merchant_refund_id))
        raw = self._answers.get(f"{channel}/{txn_type}/{merchant_order_id}/{merchant_refund_id}")
        if raw is None:
            return None
        status, note = (raw, "") if isinstance(raw, str) else (raw["status"], raw.get("note", ""))
        code = _EXPLAINING.get(status.upper(), "")
        return QueryAnswer(status=status.upper(), note=note, explains=bool(code), reason_code=code)
