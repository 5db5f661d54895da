"""The raw archive: layout, dedupe, versions that never overwrite, atomic moves."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import os
import stat
import threading
from pathlib import Path

import pytest

from recon.archive import MANIFEST, TMP_DIR, Archive

DAY = dt.date(2025, 3, 14)
NAME = "alipay_20250314.csv.zip"


def part_with(archive: Archive, data: bytes, name: str = NAME) -> Path:
    part = archive.new_part("alipay", DAY, name)
    part.write_bytes(data)
    return part


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def visible(root: Path) -> list[str]:
    """Files a reader of the archive sees (the tmp dir excluded)."""
    return sorted(
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.is_file() and TMP_DIR not in p.relative_to(root).parts
    )


def test_first_store(tmp_path: Path) -> None:
    archive = Archive(tmp_path)
    part = part_with(archive, b"bill v1")
    assert part.parent == tmp_path / TMP_DIR
    bill = archive.store("alipay", DAY, NAME, part, source="/out/alipay_20250314.csv.zip")
    assert bill.path == tmp_path / "alipay" / "2025-03-14" / NAME
    assert (bill.version, bill.is_new, bill.size, bill.sha256) == (1, True, 7, sha(b"bill v1"))
    assert bill.path.read_bytes() == b"bill v1"
    assert not part.exists()
    assert not bill.path.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
    [record] = [json.loads(line) for line in (bill.path.parent / MANIFEST).read_text().splitlines()]
    assert record["sha256"] == sha(b"bill v1")
    assert (record["size"], record["version"], record["path"]) == (7, 1, NAME)
    assert record["source"] == "/out/alipay_20250314.csv.zip"
    assert dt.datetime.fromisoformat(record["fetched_at"]).utcoffset() == dt.timedelta(0)


def test_same_content_is_stored_once(tmp_path: Path) -> None:
    archive = Archive(tmp_path)
    first = archive.store("alipay", DAY, NAME, part_with(archive, b"same"))
    part = part_with(archive, b"same")
    again = archive.store("alipay", DAY, NAME, part)
    assert not part.exists()  # dropped
    assert (again.path, again.version, again.is_new) == (first.path, 1, False)
    assert len(archive.versions("alipay", DAY, NAME)) == 1
    assert visible(tmp_path) == sorted(
        [f"alipay/2025-03-14/{MANIFEST}", f"alipay/2025-03-14/{NAME}"]
    )
    assert list((tmp_path / TMP_DIR).iterdir()) == []


def test_changed_content_is_a_new_version(tmp_path: Path) -> None:
    archive = Archive(tmp_path)
    v1 = archive.store("alipay", DAY, NAME, part_with(archive, b"first"))
    v2 = archive.store("alipay", DAY, NAME, part_with(archive, b"corrected"))
    assert v2.path == tmp_path / "alipay" / "2025-03-14" / "v2" / NAME
    assert (v2.version, v2.is_new) == (2, True)
    assert v1.path.read_bytes() == b"first"  # untouched
    assert archive.latest("alipay", DAY, NAME) == dataclasses.replace(v2, is_new=False)


def test_going_back_to_earlier_content_is_the_latest_again(tmp_path: Path) -> None:
    archive = Archive(tmp_path)
    for data in (b"A", b"B"):
        archive.store("alipay", DAY, NAME, part_with(archive, data))
    back = archive.store("alipay", DAY, NAME, part_with(archive, b"A"))
    # latest() must name what the channel serves now, so A is stored again as v3.
    assert (back.version, back.is_new, back.sha256) == (3, True, sha(b"A"))
    latest = archive.latest("alipay", DAY, NAME)
    assert latest is not None
    assert latest.version == 3


def test_names_days_and_channels_are_separate(tmp_path: Path) -> None:
    archive = Archive(tmp_path)
    a = archive.store("alipay", DAY, NAME, part_with(archive, b"x"))
    b = archive.store("alipay", DAY, "other.csv", part_with(archive, b"x", "other.csv"))
    c = archive.store("alipay", DAY + dt.timedelta(days=1), NAME, part_with(archive, b"x"))
    d = archive.store("wechatpay", DAY, NAME, part_with(archive, b"x"))
    assert [x.version for x in (a, b, c, d)] == [1, 1, 1, 1]
    assert len({a.path, b.path, c.path, d.path}) == 4
    assert archive.latest("alipay", DAY, "missing.csv") is None
    assert archive.latest("nobody", DAY, NAME) is None


def test_failed_move_leaves_nothing_visible(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = Archive(tmp_path)
    part = part_with(archive, b"bill")

    def no_space(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", no_space)
    with pytest.raises(OSError, match="No space"):
        archive.store("alipay", DAY, NAME, part)
    monkeypatch.undo()
    assert visible(tmp_path) == []
    assert not part.exists()
    assert archive.latest("alipay", DAY, NAME) is None


def test_unrecorded_file_is_never_overwritten(tmp_path: Path) -> None:
    # A crash between the move and the manifest update leaves a file the manifest lacks.
    archive = Archive(tmp_path)
    orphan = tmp_path / "alipay" / "2025-03-14" / NAME
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(b"orphan")
    bill = archive.store("alipay", DAY, NAME, part_with(archive, b"new"))
    assert bill.version == 2
    assert orphan.read_bytes() == b"orphan"


def test_part_file_outside_tmp_is_accepted(tmp_path: Path) -> None:
    archive = Archive(tmp_path / "archive")
    elsewhere = tmp_path / "download.part"
    elsewhere.write_bytes(b"bill")
    bill = archive.store("alipay", DAY, NAME, elsewhere)
    assert bill.path.read_bytes() == b"bill"
    assert not elsewhere.exists()


def test_concurrent_stores_get_distinct_versions(tmp_path: Path) -> None:
    archive = Archive(tmp_path)
    parts = [part_with(archive, f"content {i}".encode()) for i in range(8)]
    start = threading.Barrier(len(parts))
    versions: list[int] = []

    def store(part: Path) -> None:
        start.wait()
        versions.append(archive.store("alipay", DAY, NAME, part).version)

    threads = [threading.Thread(target=store, args=(p,)) for p in parts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(versions) == list(range(1, 9))
    assert len(archive.versions("alipay", DAY, NAME)) == 8


@pytest.mark.parametrize("name", ["", "../x", "a/b", ".hidden", MANIFEST, "v2"])
def test_unusable_file_names(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match="file name"):
        Archive(tmp_path).new_part("alipay", DAY, name)


@pytest.mark.parametrize("channel", ["", "..", "a/b", ".tmp"])
def test_unusable_channel_names(tmp_path: Path, channel: str) -> None:
    with pytest.raises(ValueError, match="channel"):
        Archive(tmp_path).latest(channel, DAY, NAME)
