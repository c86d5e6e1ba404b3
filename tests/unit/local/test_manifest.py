"""The manifest is opened defensively: a corrupt or truncated one is moved aside and a fresh one
started, with one warning; one that can't be opened at all is one `StateError` line."""

from __future__ import annotations

from pathlib import Path

import pytest
from structlog.testing import capture_logs

from opswatch.errors import StateError
from opswatch.local.manifest import Manifest, Origin
from opswatch.model import Pushed


def filled(path: Path, count: int = 2000) -> bytes:
    manifest = Manifest(path)
    assert manifest.origin is Origin.CREATED
    manifest.record(
        Pushed(f"/srv/{n:05}/" + "x" * 40, f"l/{n}", "a" * 64, n, n, 0o644, 1.0)
        for n in range(count)
    )
    manifest.close()
    return path.read_bytes()


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: data[: len(data) // 2],  # truncated mid-file
        lambda data: data[:4096],  # only the first page
        lambda data: data[:50],  # not even a whole header
        lambda data: b"this is not a database\n" * 100,
    ],
    ids=["half", "one-page", "header", "garbage"],
)
def test_a_corrupt_manifest_is_moved_aside_and_a_fresh_one_started(
    tmp_path: Path, damage: object
) -> None:
    path = tmp_path / "manifest.sqlite"
    damaged = damage(filled(path))  # type: ignore[operator]
    path.write_bytes(damaged)
    with capture_logs() as logs:
        manifest = Manifest(path)
    assert manifest.origin is Origin.REPLACED and manifest.all() == {}
    assert manifest.moved_aside is not None
    assert manifest.moved_aside.name.startswith("manifest.sqlite.corrupt-")
    assert manifest.moved_aside.read_bytes() == damaged  # kept for whoever wants to look
    assert [e["event"] for e in logs] == ["manifest_corrupt"]
    manifest.record([Pushed("/srv/a", "a", "b" * 64, 1, 1, 0o644, 1.0)])
    manifest.close()
    again = Manifest(path)
    assert again.origin is Origin.OPENED and list(again.all()) == ["/srv/a"]


def test_a_sound_manifest_is_opened_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / "manifest.sqlite"
    filled(path, 3)
    manifest = Manifest(path)
    assert manifest.origin is Origin.OPENED and len(manifest.all()) == 3
    assert Manifest(None).origin is Origin.MEMORY


def test_a_manifest_that_cannot_be_opened_is_one_state_error(tmp_path: Path) -> None:
    (tmp_path / "manifest.sqlite").mkdir()
    with pytest.raises(StateError, match=r"manifest.sqlite: the manifest can.t be used"):
        Manifest(tmp_path / "manifest.sqlite")
