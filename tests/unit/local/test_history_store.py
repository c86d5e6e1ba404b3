"""The deploy history store: records read back as written, the cap, and what a broken store does."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest

from opswatch.errors import HistoryError
from opswatch.local.gitstate import GitState, parse_status
from opswatch.local.history import History
from opswatch.local.history_records import FileChange, RebuildEntry, RolledBack
from opswatch.sync.recording import open_recorder

GIT = GitState("a" * 40, "main", False)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def change(path: str, before: bytes | None, after: bytes | None) -> FileChange:
    return FileChange(
        local=path,
        remote="/srv/" + path,
        before=sha(before) if before is not None else None,
        created=before is None,
        mode_before=0o644 if before is not None else None,
        after=sha(after) if after is not None else None,
        mode_after=0o755 if after is not None else None,
        size_after=len(after) if after is not None else None,
    )


def test_a_batch_reads_back_as_recorded_newest_first(tmp_path: Path) -> None:
    store = History(tmp_path, 1 << 20)
    first = store.record("sync", 100.0, GIT, [change("a", None, b"one")])
    second = store.record("batch", 200.0, GitState(), [change("a", b"one", b"two")])
    store.add_rebuild(second, RebuildEntry("web", False, "t", "health failed", True))
    newest, oldest = store.batches(10)
    assert (newest.id, oldest.id) == (second, first)
    assert oldest.git == GIT and oldest.files == (change("a", None, b"one"),)
    assert newest.rebuilds == (RebuildEntry("web", False, "t", "health failed", True),)
    assert store.batches(10, before=second) == [oldest]
    assert store.later_changes(first, ["/srv/a", "/srv/b"]) == {"/srv/a": second}


def test_blobs_are_content_addressed_and_checked(tmp_path: Path) -> None:
    store = History(tmp_path, 1 << 20)
    digest = store.keep_bytes(b"hello")
    assert store.blob(digest) == b"hello" and store.has_blob(digest)
    source = tmp_path / "f"
    source.write_bytes(b"changed since it was sent")
    store.keep_files([(source, sha(b"what was sent"))])
    assert store.blob(sha(b"what was sent")) is None
    assert store.blob("../../etc/passwd") is None


def test_the_cap_drops_the_oldest_batches_bytes_first_and_keeps_their_records(
    tmp_path: Path,
) -> None:
    store = History(tmp_path, 2500)
    contents = [bytes([n]) * 1000 for n in range(4)]
    ids = []
    for n, data in enumerate(contents):
        store.keep_bytes(data)
        ids.append(store.record("batch", float(n), GIT, [change(f"f{n}", None, data)]))
    kept = [store.blob(sha(data)) is not None for data in contents]
    assert kept == [False, False, True, True]
    assert [b.id for b in store.batches(10)] == ids[::-1]  # the log lines stay


def test_a_corrupt_row_is_left_out_not_raised(tmp_path: Path) -> None:
    store = History(tmp_path, 1 << 20)
    good = store.record("batch", 1.0, GIT, [change("a", None, b"x")])
    bad = store.record("batch", 2.0, GIT, [change("b", None, b"y")])
    store.close()
    db = sqlite3.connect(tmp_path / "history.sqlite")
    db.execute("UPDATE file SET after = 'not a hash' WHERE batch = ?", (bad,))
    db.execute("INSERT INTO batch (at, kind) VALUES ('yesterday', 'mystery')")
    db.commit()
    db.close()
    store = History(tmp_path, 1 << 20)
    assert [b.id for b in store.batches(10)] == [good]
    assert store.get(bad) is None


def test_a_file_that_is_not_a_database_is_a_history_error(tmp_path: Path) -> None:
    (tmp_path / "history.sqlite").write_bytes(b"garbage " * 512)
    with pytest.raises(HistoryError, match="deploy history"):
        History(tmp_path, 1 << 20)
    assert open_recorder(tmp_path, 1 << 20, tmp_path) is None


def test_rolled_back_marks(tmp_path: Path) -> None:
    store = History(tmp_path, 1 << 20)
    mark = RolledBack("/srv/a", "a", sha(b"local"), 3)
    store.mark_rolled_back([mark])
    assert store.rolled_back() == {"/srv/a": mark}
    store.clear_rolled_back(["/srv/a"])
    assert store.rolled_back() == {}


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("# branch.oid abc\x00# branch.head main\x00", GitState("abc", "main", False)),
        ("# branch.oid abc\x00# branch.head (detached)\x00", GitState("abc", None, False)),
        ("# branch.oid (initial)\x00# branch.head main\x00", GitState(None, "main", False)),
        (
            "# branch.oid abc\x00# branch.head main\x001 .M N... 100644 x\x00",
            GitState("abc", "main", True),
        ),
    ],
)
def test_git_status_parsing(output: str, expected: GitState) -> None:
    assert parse_status(output) == expected


def test_corrupt_bookkeeping_rows_never_raise(tmp_path: Path) -> None:
    store = History(tmp_path / "h", 10)
    store.close()
    db = sqlite3.connect(tmp_path / "h" / "history.sqlite")
    db.execute("INSERT INTO content VALUES ('../../precious', 'big', 1, x'00')")
    db.execute("INSERT INTO content VALUES (?, 3, 1, x'00')", (sha(b"abc"),))
    db.execute("INSERT INTO rolled_back VALUES ('/srv/a', 'a', 'nonsense', 'x')")
    db.execute("INSERT INTO file VALUES ('x', 'a', '/srv/a', NULL, 0, NULL, NULL, NULL, NULL)")
    db.commit()
    db.close()
    store = History(tmp_path / "h", 10)
    store.record("batch", 1.0, GIT, [change("b", None, b"y")])  # trims: must not raise
    assert store.blob(sha(b"abc")) is None  # bytes that do not hash to their name
    assert store.rolled_back() == {}
    assert store.later_changes(0, ["/srv/a"]) == {}
    assert store.earlier_change(10, ["/srv/a"]) is None


def test_files_are_kept_in_pieces_and_one_bigger_than_the_cap_not_at_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("opswatch.local.history.STORE_CHUNK", 100)
    store = History(tmp_path / "h", 1000)
    files = []
    for n in range(5):
        path = tmp_path / f"f{n}"
        path.write_bytes(bytes([n]) * 60)
        files.append((path, sha(path.read_bytes())))
    big = tmp_path / "big"
    big.write_bytes(b"x" * 1001)
    store.keep_files([*files, (big, sha(big.read_bytes()))])
    assert all(store.blob(digest) is not None for _, digest in files)
    assert store.blob(sha(big.read_bytes())) is None
