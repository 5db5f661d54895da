"""A bill parsed in chunks (and in worker processes) equals the bill parsed whole."""

from __future__ import annotations

import dataclasses
import gzip
import io
import os
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parsers import get_parser
from parsers.base import ParseContext, ParsedBill, ParseProgress
from parsers.chunked import (
    detached,
    in_file,
    iter_chunks,
    open_stream,
    payload,
    run_ordered,
)
from recon.errors import InputError
from recon.rules import load_rules

FIXTURES = Path(__file__).resolve().parent / "fixtures"
RULES = load_rules()
WECHAT = [
    "all_mixed.csv",
    "all_mixed.csv.gz",
    "bad_rows.csv",
    "legacy.csv",
    "refund.csv",
    "success.csv",
]
ALIPAY = ["bad_rows.csv", "detail.gbk.csv", "detail.utf8.csv"]
CASES = [("wechatpay", FIXTURES / "wechatpay" / n) for n in WECHAT] + [
    ("alipay", FIXTURES / "alipay" / n) for n in ALIPAY
]


def ctx(channel: str, tmp: Path, **kw: Any) -> ParseContext:
    rules = RULES.channel(channel)
    base = ParseContext(channel, rules.timezone, status_map=rules.status_map, work_dir=tmp)
    return dataclasses.replace(base, **kw)


def parse(channel: str, path: Path, tmp: Path, **kw: Any) -> ParsedBill:
    parser = get_parser(RULES.channel(channel).parser)
    return parser.parse(path, ctx(channel, tmp, **kw))


def same(a: ParsedBill, b: ParsedBill) -> None:
    assert a.rows.collect().equals(b.rows.collect())
    assert a.quarantine.equals(b.quarantine)
    assert (a.rows_read, a.n_rows, a.layout) == (b.rows_read, b.n_rows, b.layout)
    assert [(t.name, t.expected, t.actual) for t in a.totals] == [
        (t.name, t.expected, t.actual) for t in b.totals
    ]
    assert a.summary_line == b.summary_line


@pytest.mark.parametrize(("channel", "path"), CASES, ids=lambda c: str(c).rsplit("/", 1)[-1])
@settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(size=st.integers(min_value=1, max_value=2000))
def test_any_chunk_size_gives_the_whole_parse(
    channel: str, path: Path, size: int, tmp_path: Path
) -> None:
    whole = parse(channel, path, tmp_path / "whole")
    seen: list[ParseProgress] = []
    chunked = parse(
        channel, path, tmp_path / f"c{size}", chunk_bytes=size, workers=1, progress=seen.append
    )
    same(whole, chunked)
    if size < path.stat().st_size // 2:
        assert len(chunked.rows_files) > 1  # really more than one chunk
    # The last progress report is the whole parse's count, whatever chunks it dropped.
    assert (seen[-1].lines, seen[-1].quarantined) == (whole.rows_read, whole.quarantine.height)


def test_worker_processes_give_the_whole_parse(tmp_path: Path) -> None:
    """The process pool: results come back in file order, line numbers intact."""
    for channel, path in [CASES[0], CASES[2], CASES[-2]]:
        whole = parse(channel, path, tmp_path / "whole")
        pooled = parse(channel, path, tmp_path / "pool", chunk_bytes=300, workers=2)
        assert len(pooled.rows_files) > 2
        same(whole, pooled)


def test_summary_split_across_chunks_still_checks_totals(tmp_path: Path) -> None:
    """Every line its own chunk: the summary header and values arrive apart."""
    path = FIXTURES / "wechatpay" / "bad_totals.csv"
    whole = parse("wechatpay", path, tmp_path / "w")
    chunked = parse("wechatpay", path, tmp_path / "c", chunk_bytes=1, workers=1)
    same(whole, chunked)
    with pytest.raises(InputError, match="control totals do not match"):
        chunked.check_totals()


def test_alipay_zip_streams_its_detail_entry(tmp_path: Path) -> None:
    path = FIXTURES / "alipay" / "detail.gbk.csv"
    zipped = tmp_path / "bill.zip"
    with zipfile.ZipFile(zipped, "w") as zf:
        zf.writestr("20880000_业务明细.csv", path.read_bytes())
    whole = parse("alipay", zipped, tmp_path / "w")
    chunked = parse("alipay", zipped, tmp_path / "c", chunk_bytes=100, workers=1)
    same(whole, chunked)
    assert whole.n_rows == parse("alipay", path, tmp_path / "p").n_rows


def test_mixed_encodings_are_refused(tmp_path: Path) -> None:
    """A UTF-8 bill with a GBK line in a later chunk is bad input, named by line."""
    src = (FIXTURES / "wechatpay" / "all_mixed.csv").read_text(encoding="utf-8").splitlines()
    gbk_line = src[2].encode("utf-8").decode("utf-8").encode("gb18030")
    body = "\n".join(src[:2]).encode("utf-8") + b"\n" + gbk_line + b"\n"
    body += "\n".join(src[3:]).encode("utf-8") + b"\n"
    path = tmp_path / "mixed.csv"
    path.write_bytes(body)
    with pytest.raises(InputError, match="mixed encodings") as err:
        parse("wechatpay", path, tmp_path / "c", chunk_bytes=1, workers=1)
    assert err.value.line == 3


def test_chunks_cut_only_at_line_ends(tmp_path: Path) -> None:
    data = "一行\n二行\r\n\n最后一行没有换行".encode("gb18030")
    path = tmp_path / "x.csv.gz"
    path.write_bytes(gzip.compress(data))
    with open_stream(path) as stream:
        chunks = list(iter_chunks(path, stream, size=3))
    assert b"".join(c.data for c in chunks) == data
    assert all(c.data.endswith(b"\n") for c in chunks[:-1])
    before = [b"".join(c.data for c in chunks[:i]).count(b"\n") for i in range(len(chunks))]
    assert [c.first_line for c in chunks] == [1 + n for n in before]
    assert [c.last for c in chunks] == [False] * (len(chunks) - 1) + [True]
    assert len(chunks) >= 3
    assert [c.index for c in chunks] == list(range(len(chunks)))
    # Offsets in the gunzipped stream: where each chunk's lines start.
    assert [data[c.offset : c.offset + len(c.data)] for c in chunks] == [c.data for c in chunks]


# Text of a few short lines, some multibyte, for the chunking properties.
_LINES = st.text(alphabet="ab\n一", max_size=60).map(str.encode)


class _Trickle(io.BytesIO):
    """A stream that hands over at most ``step`` bytes per read, as pipes may."""

    def __init__(self, data: bytes, step: int) -> None:
        super().__init__(data)
        self.step = step

    def readinto(self, b: Any) -> int:
        view = memoryview(b)
        return super().readinto(view[: self.step])


@settings(max_examples=200, deadline=None)
@given(data=_LINES, size=st.integers(1, 16), step=st.integers(1, 20))
def test_chunks_are_whole_lines_within_the_size(data: bytes, size: int, step: int) -> None:
    chunks = list(iter_chunks("t.csv", _Trickle(data, step), size=size))
    assert b"".join(c.data for c in chunks) == data
    assert [c.index for c in chunks] == list(range(len(chunks)))
    assert [c.last for c in chunks] == [False] * (len(chunks) - 1) + [True] or (
        data.endswith(b"\n") and not any(c.last for c in chunks)
    )
    for i, c in enumerate(chunks):
        assert c.offset == sum(len(x.data) for x in chunks[:i])
        assert c.first_line == 1 + data[: c.offset].count(b"\n")
        if not c.last:
            assert c.data.endswith(b"\n")
            # Over the size only when its first line is, and by at most one more read.
            first = c.data.find(b"\n") + 1
            assert len(c.data) <= size or size < first <= len(c.data) <= first + size


@settings(max_examples=200, deadline=None)
@given(data=_LINES, size=st.integers(1, 16), step=st.integers(1, 20))
def test_chunks_left_in_the_file_are_the_same_lines(data: bytes, size: int, step: int) -> None:
    """With ``file``, chunks after the first carry no bytes, only where to read them."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "t.csv"
        path.write_bytes(data)
        kept = list(iter_chunks(path, _Trickle(data, step), size=size))
        away = list(iter_chunks(path, _Trickle(data, step), size=size, file=path))
        assert [payload(c) for c in away] == [c.data for c in kept]
    place = [(c.index, c.first_line, c.offset, c.last) for c in kept]
    assert [(c.index, c.first_line, c.offset, c.last) for c in away] == place
    assert away[0] == kept[0]  # the first keeps its bytes: the header is read from them
    assert all(c.data == b"" and c.file == path for c in away[1:])
    assert away[1:] == [detached(c, path) for c in kept[1:]]


@settings(max_examples=200, deadline=None)
@given(data=_LINES, size=st.integers(1, 16), step=st.integers(1, 20))
def test_chunks_spooled_from_a_stream_are_the_same_lines(data: bytes, size: int, step: int) -> None:
    """With ``spool``, chunks after the first are written to files of their own, each read
    once and deleted."""
    with tempfile.TemporaryDirectory() as tmp:
        spool = Path(tmp)
        kept = list(iter_chunks("t.csv", _Trickle(data, step), size=size))
        away = list(iter_chunks("t.csv", _Trickle(data, step), size=size, spool=spool))
        files = [c.file for c in away[1:]]
        assert sorted(spool.iterdir()) == sorted(f for f in files if f is not None)
        assert len(set(files)) == len(files)
        assert [payload(c) for c in away] == [c.data for c in kept]
        assert list(spool.iterdir()) == []  # read once: gone
    place = [(c.index, c.first_line, c.offset, c.last, c.end) for c in kept]
    assert [(c.index, c.first_line, c.offset, c.last, c.end) for c in away] == place
    assert away[0] == kept[0]  # the first keeps its bytes: the header is read from them
    assert all(c.data == b"" and c.spooled for c in away[1:])


@pytest.fixture
def temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The machine's temporary folder, this test's own: where a parse spools chunks."""
    folder = tmp_path / "temp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def watching(folder: Path) -> tuple[list[str], Callable[[ParseProgress], None]]:
    """A progress callback noting what is in ``folder`` at each report, and its notes."""
    seen: list[str] = []

    def look(_: ParseProgress) -> None:
        seen.extend(p.name for p in folder.iterdir())

    return seen, look


def test_compressed_bills_parse_in_workers_and_leave_only_their_parts(
    tmp_path: Path, temp: Path
) -> None:
    """A gzip or zip bill's chunks go to the workers through spooled files in the machine's
    temporary folder (not the work folder, which may be shared storage); they go after."""
    gbk = FIXTURES / "alipay" / "detail.gbk.csv"
    zipped = tmp_path / "bill.zip"
    with zipfile.ZipFile(zipped, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("20880000_业务明细.csv", gbk.read_bytes())
    wechat = FIXTURES / "wechatpay" / "all_mixed.csv"
    for channel, plain, packed in [
        ("wechatpay", wechat, FIXTURES / "wechatpay" / "all_mixed.csv.gz"),
        ("alipay", gbk, zipped),
    ]:
        out = tmp_path / channel
        spools, look = watching(temp)
        pooled = parse(channel, packed, out, chunk_bytes=300, workers=2, progress=look)
        whole = parse(channel, plain, tmp_path / f"{channel}-whole")
        assert len(pooled.rows_files) > 2
        rows = [b.rows.collect().drop("source_file") for b in (pooled, whole)]
        assert rows[0].equals(rows[1])
        assert (pooled.rows_read, pooled.n_rows) == (whole.rows_read, whole.n_rows)
        assert spools
        assert all(n.startswith("recon-chunks-") for n in spools)
        assert sorted(out.iterdir()) == sorted(pooled.rows_files)
        assert list(temp.iterdir()) == []


def test_a_gzip_bill_cut_short_is_bad_input_and_leaves_no_spool(tmp_path: Path, temp: Path) -> None:
    text = (FIXTURES / "wechatpay" / "all_mixed.csv").read_bytes() * 20
    blob = gzip.compress(text)
    path = tmp_path / "bill.csv.gz"
    path.write_bytes(blob[: len(blob) * 3 // 4])
    spools, look = watching(temp)
    with pytest.raises(InputError, match="corrupt or truncated compressed data") as err:
        parse("wechatpay", path, tmp_path / "work", chunk_bytes=300, workers=2, progress=look)
    assert err.value.path == path
    assert spools  # chunks were spooled before the cut was reached
    assert list(temp.iterdir()) == []


def test_workers_read_a_plain_files_lines_themselves(tmp_path: Path) -> None:
    data = "一行\n二行\r\n\n最后一行没有换行".encode("gb18030")
    path = tmp_path / "x.csv"
    path.write_bytes(data)
    with open_stream(path) as stream:
        assert in_file(stream)
        chunks = list(iter_chunks(path, stream, size=3))
    away = [detached(c, path) for c in chunks]
    assert all(a.data == b"" for a in away)
    assert [payload(a) for a in away] == [c.data for c in chunks]
    with gzip.open(tmp_path / "x.csv.gz", "wb") as gz:
        gz.write(data)
    with open_stream(tmp_path / "x.csv.gz") as stream:
        assert not in_file(stream)  # offsets of the gunzipped bytes: not the file's


def test_parts_hold_the_standard_columns(tmp_path: Path) -> None:
    bill = parse("wechatpay", FIXTURES / "wechatpay" / "all_mixed.csv", tmp_path)
    for part in bill.rows_files:
        assert part.parent == tmp_path
        assert pl.read_parquet_schema(part) == dict(bill.rows.collect_schema())


def _allocator_conf(_: int) -> str | None:
    return os.environ.get("_RJEM_MALLOC_CONF")


def test_workers_keep_freed_memory_and_the_parent_is_untouched() -> None:
    before = os.environ.get("_RJEM_MALLOC_CONF")
    seen = list(run_ordered(_allocator_conf, range(3), workers=2))
    # polars puts its own settings first; the last ones win, so the workers keep pages.
    assert all(c is not None and c.endswith("dirty_decay_ms:-1,muzzy_decay_ms:-1") for c in seen)
    assert os.environ.get("_RJEM_MALLOC_CONF") == before


def _outcome(channel: str, path: Path, tmp: Path, **kw: Any) -> ParsedBill | tuple[object, ...]:
    """The parse, or its error's message and place."""
    try:
        return parse(channel, path, tmp, **kw)
    except InputError as exc:
        return (str(exc), exc.line, exc.column)


_WECHAT_LINES = (FIXTURES / "wechatpay" / "all_mixed.csv").read_text("utf-8").splitlines()
_DATA_END = next(i for i, line in enumerate(_WECHAT_LINES) if line.startswith("总交易单数"))
# Ways a summary block goes wrong, each a function of the fixture's lines.
_DAMAGE: dict[str, Callable[[list[str]], list[str]]] = {
    "intact": lambda ls: ls,
    "blank lines after": lambda ls: [*ls, "", "  ", ""],
    "a line after": lambda ls: [*ls, "", "`2024-03-05 09:00:00,`wx"],
    "two lines after": lambda ls: [*ls, "x", "y"],
    "no values line": lambda ls: [*ls[:-1], ""],
    "no summary": lambda ls: ls[:_DATA_END],
    "summary mid-file": lambda ls: [*ls[:2], " " + ls[_DATA_END], *ls[2:]],
    "indented summary": lambda ls: [*ls[:_DATA_END], "\t" + ls[_DATA_END], *ls[_DATA_END + 1 :]],
}


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(damage=st.sampled_from(sorted(_DAMAGE)), size=st.integers(1, 1500))
def test_summary_found_by_the_workers_as_when_parsed_whole(
    damage: str, size: int, tmp_path: Path
) -> None:
    """Each chunk's worker looks for the summary's start itself: wherever the cuts fall,
    the outcome (rows, totals or the error and its line) is the whole file's."""
    here = Path(tempfile.mkdtemp(dir=tmp_path))  # tmp_path is shared by the examples
    path = here / "bill.csv"
    path.write_text("\r\n".join(_DAMAGE[damage](_WECHAT_LINES)) + "\r\n", "utf-8")
    whole = _outcome("wechatpay", path, here / "whole")
    chunked = _outcome("wechatpay", path, here / "chunked", chunk_bytes=size, workers=1)
    if not isinstance(whole, ParsedBill):
        assert chunked == whole
        return
    assert isinstance(chunked, ParsedBill)
    same(whole, chunked)
    # Only the parts of chunks up to the summary's remain, holding the parse's rows.
    parts = (here / "chunked").glob("standard-part-*.parquet")
    assert sum(pl.read_parquet(p).height for p in parts) == whole.n_rows
