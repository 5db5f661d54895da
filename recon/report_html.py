"""The channel-day report as one self-contained HTML file (inline CSS and SVG, no scripts).

Every figure sits in an element with a stable ``data-metric`` attribute so tests and
tools can read the numbers back; every value is escaped and personal columns are masked.

Its size does not grow with the day: aggregates, a 30-day trend and the ``top`` largest open
breaks, never every break. When a queue is longer than a sheet of queues.xlsx holds, it says
so and where the full queue is (``<queue>.csv`` / ``.parquet``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from html import escape
from pathlib import Path

from recon.masking import mask_if_personal
from recon.report_data import (
    BREAK_COLUMNS,
    KIND_LABELS,
    QUEUE_LABELS,
    QUEUE_TITLES,
    STATE_LABELS,
    BreakRow,
    Money,
    ReportData,
    Tally,
    TrendPoint,
)

_CSS = """
body{font-family:"Noto Sans CJK SC","Noto Sans SC","PingFang SC","Microsoft YaHei",
 system-ui,sans-serif;margin:24px 32px;color:#1f2933;background:#fff;font-size:14px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;
 border-bottom:2px solid #d9e2ec;padding-bottom:4px}
.zh{color:#52606d;font-weight:normal;margin-left:6px}
.meta{color:#52606d;margin:0 0 16px;line-height:1.7}.meta>span{display:inline-block;margin-right:18px}
.cards{display:flex;gap:12px;flex-wrap:wrap}
.card{border:1px solid #d9e2ec;border-radius:6px;padding:10px 14px;min-width:150px}
.card .label{color:#52606d;font-size:12px}.card .value{font-size:22px;font-weight:600}
table{border-collapse:collapse;margin:4px 0 8px}
th,td{border-bottom:1px solid #e4e7eb;padding:4px 10px;text-align:left;vertical-align:top}
th{background:#f0f4f8;font-weight:600}tbody tr:nth-child(even){background:#fafbfc}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
.cur{color:#7b8794;font-size:11px;margin-left:3px}.muted{color:#9aa5b1}
.bar{display:inline-block;height:10px;background:#f0b429;vertical-align:middle}
.note{color:#52606d;font-size:12px}
svg text{font-size:11px;fill:#52606d}
.wide{overflow-x:auto}.wide td,.wide th{white-space:nowrap}
"""


_CSP = "default-src 'none'; style-src 'unsafe-inline'"


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def _td(value: object, metric: str | None = None, cls: str = "") -> str:
    attrs = f' class="{cls}"' if cls else ""
    if metric is not None:
        attrs += f' data-metric="{_e(metric)}"'
    return f"<td{attrs}>{_e(value)}</td>"


def _amounts(amounts: Sequence[Money], metric: str) -> str:
    """One line per currency; no figure at all when nothing has an amount."""
    if not amounts:
        return '<td class="num"><span class="muted">—</span></td>'
    lines = (
        f'<span data-metric="{_e(metric)}.amount.{_e(m.currency)}">{_e(m.text)}</span>'
        f'<span class="cur">{_e(m.currency)}</span>'
        for m in amounts
    )
    return f'<td class="num">{"<br>".join(lines)}</td>'


def _tally_cells(tally: Tally, metric: str) -> str:
    return _td(tally.count, f"{metric}.count", "num") + _amounts(tally.amounts, metric)


def _title(en: str, zh: str) -> str:
    return f'{_e(en)}<span class="zh">{_e(zh)}</span>'


def _table(headers: Iterable[str], rows: Iterable[str]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join(rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _header(d: ReportData) -> str:
    run = d.run
    meta = [
        f'<span>Channel 渠道: <b data-field="channel">{_e(d.channel)}</b></span>',
        f'<span>Business date 账单日期: <b data-field="day">{_e(d.day.isoformat())}</b></span>',
        f'<span>Generated 生成时间: <span data-field="generated_at">'
        f"{_e(d.generated_at.astimezone(dt.UTC).strftime('%Y-%m-%d %H:%M:%S UTC'))}</span></span>",
    ]
    if run is None:
        meta.append("<span>No run recorded for this day 当日无对账记录</span>")
    else:
        meta += [
            f'<span>Run 批次: <span data-field="run_id">{_e(run.run_id)}</span>, started '
            f'<span data-field="run_started_at">'
            f"{_e(run.started_at.strftime('%Y-%m-%d %H:%M:%S UTC'))}</span></span>",
            f'<span>Bill 对账单: <span data-field="bill_file">{_e(run.bill_file)}</span></span>',
            f'<span>Ledger 账务: <span data-field="ledger_file">{_e(run.ledger_file)}</span></span>',
        ]
    return (
        f'<h1>{_title("Reconciliation report", "对账报告")}</h1><p class="meta">{"".join(meta)}</p>'
    )


def _card(en: str, zh: str, value: object, metric: str) -> str:
    return (
        f'<div class="card"><div class="label">{_title(en, zh)}</div>'
        f'<div class="value" data-metric="{_e(metric)}">{_e(value)}</div></div>'
    )


def _cards(d: ReportData) -> str:
    cards = []
    if d.match is not None and d.run is not None:
        m = d.match
        cards += [
            _card("Match rate", "匹配率", m.percent, "match.rate"),
            _card("Matched", "已匹配", m.matched, "match.matched"),
            _card("Bill rows", "账单笔数", m.bill_rows, "match.bill_rows"),
            _card("Ledger rows", "账务笔数", m.ledger_rows, "match.ledger_rows"),
            _card("Quarantined", "隔离行", d.run.quarantined, "run.quarantined"),
        ]
    cards.append(_card("Open breaks", "未决差错", d.open_count, "open.count"))
    return f'<div class="cards">{"".join(cards)}</div>'


def _queues(d: ReportData) -> str:
    rows = (
        f"<tr><td>{_e(QUEUE_TITLES.get(q.queue, q.queue))}</td>"
        f"<td>{_e(QUEUE_LABELS.get(q.queue, ''))}</td>"
        + _td(q.rows, f"{q.queue}.count", "num")
        + _td(q.records, f"{q.queue}.records", "num")
        + _amounts(q.amounts, q.queue)
        + "</tr>"
        for q in d.queues
    )
    headers = ["Queue", "队列", "Rows 行数", "Records 笔数", "Amount 金额"]
    return (
        f"<h2>{_title('Queues of this run', '本次对账差错队列')}</h2>"
        + _table(headers, rows)
        + '<p class="note">Field mismatch has one row per differing field; records and amounts '
        "count each bill/ledger record once. 数据差错按字段分行，笔数与金额按记录计。</p>"
        + "".join(_cut_note(q, shown, total) for q, (shown, total) in d.sheet_rows_of.items())
    )


def _cut_note(queue: str, shown: int, total: int) -> str:
    """Where to find a queue too long for its sheet of queues.xlsx (nothing when it fits)."""
    if shown >= total:
        return ""
    return (
        f'<p class="note" data-queue="{_e(queue)}">queues.xlsx shows the first '
        f'<span data-metric="{_e(queue)}.sheet_rows">{shown}</span> of {total} rows of '
        f"{_e(queue)}; the full queue is in <b>{_e(queue)}.csv</b> and "
        f"<b>{_e(queue)}.parquet</b>. 工作表仅列前 {shown} 行，共 {total} 行；"
        f"完整队列见 {_e(queue)}.csv / {_e(queue)}.parquet。</p>"
    )


def _breaks(d: ReportData) -> str:
    rows = [
        f"<tr><td>{_e(b.kind)}</td><td>{_e(KIND_LABELS.get(b.kind, ''))}</td>"
        f"<td>{_e(b.state)}</td><td>{_e(STATE_LABELS.get(b.state, ''))}</td>"
        + _tally_cells(b.tally, f"breaks.{b.kind}.{b.state}")
        + "</tr>"
        for b in d.breaks
    ]
    if not rows:
        rows = ['<tr><td colspan="6" class="muted">No breaks 无差错</td></tr>']
    headers = ["Kind", "类型", "State", "状态", "Count 笔数", "Amount 金额"]
    return (
        f"<h2>{_title('Breaks by kind and state', '差错类型与状态')}</h2>"
        + _table(headers, rows)
        + '<p class="note">Open at the end of the day, or closed on the day. '
        "当日日终未决及当日关闭的差错。</p>"
    )


def _aging(d: ReportData) -> str:
    top = max((a.tally.count for a in d.aging), default=0) or 1
    rows = (
        f"<tr><td>{_e(a.label)}</td>"
        + _tally_cells(a.tally, f"aging.{a.label}")
        + f'<td><span class="bar" style="width:{200 * a.tally.count // top}px"></span></td></tr>'
        for a in d.aging
    )
    headers = ["Age (days) 账龄（天）", "Count 笔数", "Amount 金额", ""]
    return f"<h2>{_title('Open breaks by age', '未决差错账龄')}</h2>" + _table(headers, rows)


def _nice_ceiling(n: int) -> int:
    """The axis top: the smallest 1, 2 or 5 x 10^k at or above n."""
    step = 1
    while True:
        for m in (1, 2, 5):
            if m * step >= n:
                return m * step
        step *= 10


def trend_svg(points: Sequence[TrendPoint]) -> str:
    """Bars of the open-break count per day; integer geometry keeps the output stable."""
    left, top, band, plot_h = 48, 12, 30, 160
    width, height = left + band * len(points) + 12, top + plot_h + 36
    y_max = _nice_ceiling(max((p.tally.count for p in points), default=0)) or 1
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="open breaks per day">'
    ]
    for tick in (0, y_max // 2, y_max) if y_max > 1 else (0, y_max):
        y = top + plot_h - plot_h * tick // y_max
        parts.append(
            f'<line x1="{left}" y1="{y}" x2="{width - 12}" y2="{y}" stroke="#e4e7eb"/>'
            f'<text x="{left - 6}" y="{y + 4}" text-anchor="end">{tick}</text>'
        )
    for i, p in enumerate(points):
        h = plot_h * p.tally.count // y_max
        x = left + i * band + 4
        amounts = ", ".join(f"{m.text} {m.currency}" for m in p.tally.amounts)
        tip = f"{p.day.isoformat()}: {p.tally.count} open" + (f", {amounts}" if amounts else "")
        parts.append(
            f'<rect x="{x}" y="{top + plot_h - h}" width="{band - 8}" height="{h}" '
            f'fill="#2680c2" data-day="{p.day.isoformat()}" data-count="{p.tally.count}">'
            f"<title>{_e(tip)}</title></rect>"
        )
        if i % 5 == 4 or i == len(points) - 1:
            parts.append(
                f'<text x="{x + (band - 8) // 2}" y="{top + plot_h + 16}" text-anchor="middle">'
                f"{p.day:%m-%d}</text>"
            )
    parts.append("</svg>")
    return "".join(parts)


def _trend(d: ReportData) -> str:
    rows = (
        f"<tr><td>{_e(p.day.isoformat())}</td>" + _tally_cells(p.tally, f"trend.{p.day}") + "</tr>"
        for p in d.trend
    )
    return (
        f"<h2>{_title('Open breaks, last 30 days', '近30日未决差错')}</h2>"
        + trend_svg(d.trend)
        + "<details><summary>Figures 数据</summary>"
        + _table(["Date 日期", "Open 未决笔数", "Amount 金额"], rows)
        + "</details>"
    )


def _break_row(i: int, b: BreakRow, personal: Sequence[str]) -> str:
    values = {c: getattr(b, c) for c, _ in BREAK_COLUMNS} | dict(b.personal)
    cells = [
        f'<td data-field="{_e(c)}">{_e(mask_if_personal(c, str(values.get(c, ""))))}</td>'
        for c in [c for c, _ in BREAK_COLUMNS] + list(personal)
    ]
    amount = (
        f'<td class="num" data-metric="largest.{i}.amount">{_e(b.amount.text)}'
        f'<span class="cur">{_e(b.amount.currency)}</span></td>'
        if b.amount
        else '<td class="num muted">—</td>'
    )
    # The amount second: it is why the row is on the list.
    return f'<tr data-break-id="{b.break_id}">{cells[0]}{amount}{"".join(cells[1:])}</tr>'


def _largest(d: ReportData) -> str:
    shown = d.largest
    personal = sorted({c for b in shown for c, _ in b.personal})
    names = [h for _, h in BREAK_COLUMNS] + personal
    headers = [names[0], "Amount 金额", *names[1:]]
    rows = [_break_row(i, b, personal) for i, b in enumerate(shown, 1)]
    if not rows:
        rows = [f'<tr><td colspan="{len(headers)}" class="muted">None 无</td></tr>']
    title = _title(f"Largest open breaks ({len(shown)} of {d.open_count})", "最大未决差错")
    note, listed = "", min(d.open_rows.height, d.sheet_rows)
    if d.open_count > listed:
        note = (
            f'<p class="note">queues.xlsx lists the largest <span data-metric="open.sheet_rows">'
            f"{listed}</span> of {d.open_count} open breaks; <code>recon breaks list</code> and "
            f"<code>recon breaks export</code> give them all. 工作表仅列金额最大的 {listed} "
            "笔未决差错。</p>"
        )
    return f'<h2>{title}</h2><div class="wide">{_table(headers, rows)}</div>{note}'


def render(d: ReportData) -> str:
    title = f"对账报告 {d.channel} {d.day.isoformat()}"
    body = "".join(
        (_header(d), _cards(d), _queues(d), _breaks(d), _aging(d), _trend(d), _largest(d))
    )
    return (
        '<!DOCTYPE html>\n<html lang="zh-CN"><head><meta charset="utf-8">'
        # Nothing to fetch and nothing to run, and the browser is told so.
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head>\n"
        f"<body>\n{body}\n</body></html>\n"
    )


def write_html(data: ReportData, path: Path) -> None:
    path.write_text(render(data), encoding="utf-8")
