"""report.html as a browser renders it: headless Chromium's DOM carries the store's figures,
and its screenshot is a real page, not a blank one.

Needs /usr/bin/chromium (Debian package ``chromium``; .ci/run installs it).
"""

from __future__ import annotations

import struct
import subprocess
import zlib
from pathlib import Path

import pytest

from tests.test_reports import Store, build_store, expected_metrics, html_metrics

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
TIMEOUT = 90  # seconds; a first start on a cold machine takes a few

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="headless Chromium missing: apt-get install chromium"
)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    return build_store(tmp_path_factory.mktemp("browser"))


def chromium(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    profile = tmp / "profile"
    return subprocess.run(
        [str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=True,
    )


def test_rendered_dom_carries_the_stores_figures(store: Store, tmp_path: Path) -> None:
    page = (store.reports / "report.html").resolve().as_uri()
    dom = chromium(tmp_path, "--dump-dom", page).stdout
    assert "对账报告" in dom
    assert html_metrics(dom) == expected_metrics(store.db)


def png_rows(data: bytes, limit: int) -> tuple[int, int, list[bytes]]:
    """A minimal PNG decoder (8-bit RGB/RGBA, not interlaced): width, height and the first
    ``limit`` rows of pixels as RGB bytes."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        header = body if kind == b"IHDR" else header
        idat += body if kind == b"IDAT" else b""
        pos += 12 + length
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert depth == 8
    assert colour in (2, 6)
    assert interlace == 0
    bpp = 3 if colour == 2 else 4
    raw, stride = zlib.decompress(idat), width * bpp
    rows: list[bytes] = []
    prev = bytearray(stride)
    for y in range(min(limit, height)):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        for i in range(stride):  # undo the row's filter (PNG spec, section 9)
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if kind == 1:
                line[i] = (line[i] + a) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + b) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        prev = line
        rows.append(bytes(line) if bpp == 3 else bytes(v for i, v in enumerate(line) if i % 4 != 3))
    return width, height, rows


def test_screenshot_is_a_real_page(store: Store, tmp_path: Path) -> None:
    shot = tmp_path / "r.png"
    page = (store.reports / "report.html").resolve().as_uri()
    chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,2000", page)
    data = shot.read_bytes()
    assert len(data) > 30_000
    width, height, top = png_rows(data, 320)  # title, figures, queue table
    assert (width, height) == (1280, 2000)
    pixels = [row[i : i + 3] for row in top for i in range(0, len(row), 3)]
    colours = set(pixels)
    ink = sum(p != b"\xff\xff\xff" for p in pixels) / len(pixels)
    assert len(colours) > 20  # text, borders, bars: not a blank or single-colour page
    assert 0.01 < ink < 0.6
