"""The manifest translates sqlite's errors at one boundary, from one table, and maps them all."""

from __future__ import annotations

import ast
import inspect
import sqlite3
from pathlib import Path

import pytest

from opswatch.errors import OpswatchError, StateError
from opswatch.local import manifest
from opswatch.local.manifest import Manifest


def caught_types() -> set[type[BaseException]]:
    """Every exception type an ``except`` clause of the manifest catches and does not re-raise."""
    tree = ast.parse(inspect.getsource(manifest))
    found: set[type[BaseException]] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ExceptHandler) and node.type is not None:
            last = node.body[-1]
            if isinstance(last, ast.Raise) and last.exc is None:
                continue
            value = eval(ast.unparse(node.type), vars(manifest))
            found.update(value if isinstance(value, tuple) else (value,))
    # The manifest's own signals (a corrupt file, moved aside) are not a library's errors.
    return {
        t for t in found if not issubclass(t, OpswatchError) and t.__module__ != manifest.__name__
    }


def test_every_sqlite_exception_is_mapped() -> None:
    kinds = [v for v in vars(sqlite3).values() if inspect.isclass(v) and issubclass(v, Exception)]
    assert kinds
    for kind in kinds:
        assert issubclass(kind, manifest.CAUGHT), kind.__name__


def test_the_manifest_catches_only_what_its_table_maps() -> None:
    caught = caught_types()
    assert caught
    assert all(issubclass(kind, manifest.CAUGHT) for kind in caught), caught


def test_a_corrupt_manifest_is_moved_aside_not_an_error(tmp_path: Path) -> None:
    path = tmp_path / "manifest.sqlite"
    path.write_bytes(b"not a database" * 1000)
    store = Manifest(path)
    assert store.origin is manifest.Origin.REPLACED
    assert store.moved_aside is not None
    assert store.moved_aside.read_bytes() == b"not a database" * 1000
    assert store.all() == {}


def test_a_manifest_that_cannot_be_opened_is_a_state_error(tmp_path: Path) -> None:
    with pytest.raises(StateError, match="can't be used: unable to open"):
        Manifest(tmp_path / "no such folder" / "manifest.sqlite")


def test_the_manifest_lock_is_released_after_a_failure(tmp_path: Path) -> None:
    store = Manifest(tmp_path / "manifest.sqlite")
    store.close()
    with pytest.raises(StateError):
        store.get("/srv/a")  # a closed database: sqlite3.ProgrammingError
    with pytest.raises(StateError):
        store.get("/srv/a")  # would hang if the first failure had kept the lock
