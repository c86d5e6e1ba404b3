"""PATH arguments as git takes them: relative to the current folder, made relative to the repo."""

from __future__ import annotations

from pathlib import PurePosixPath

import pytest

from opswatch.core.selection import EVERYTHING, Selection, parse_selection
from opswatch.errors import UsageError

ROOT = PurePosixPath("/home/you/repo")


@pytest.mark.parametrize(
    ("cwd", "args", "named"),
    [
        (ROOT, ["docs/ops/Dockerfile.api"], ("docs/ops/Dockerfile.api",)),
        (ROOT / "docs/ops", ["Dockerfile.api"], ("docs/ops/Dockerfile.api",)),
        (
            ROOT / "docs/ops/runbooks",
            ["../Dockerfile.api", "."],
            (
                "docs/ops/Dockerfile.api",
                "docs/ops/runbooks",
            ),
        ),
        (ROOT / "docs", ["/home/you/repo/docs/ops/"], ("docs/ops",)),
        (ROOT, [".", "./"], (".",)),
        (ROOT, ["a", "a/"], ("a",)),
    ],
)
def test_arguments_become_repository_paths(
    cwd: PurePosixPath, args: list[str], named: tuple[str, ...]
) -> None:
    assert parse_selection(args, cwd, ROOT).paths == named


@pytest.mark.parametrize("arg", ["..", "../other/file", "/etc/passwd", "", "a\0b"])
def test_a_path_outside_the_repository_is_bad_usage(arg: str) -> None:
    with pytest.raises(UsageError):
        parse_selection([arg], ROOT, ROOT)


@pytest.mark.parametrize(
    ("named", "path", "selected"),
    [
        ((), "anything/at/all", True),
        (("docs/ops",), "docs/ops/Dockerfile.api", True),
        (("docs/ops",), "docs/ops", True),
        (("docs/ops",), "docs/opsx/file", False),
        (("docs/ops/runbooks",), "docs/ops/Dockerfile.api", False),
        (("docs/ops/data",), "docs/ops/data/", True),  # a refused folder, as scan names it
        ((".",), "docs/ops/x", True),
    ],
)
def test_a_path_is_selected_by_itself_and_by_any_folder_above_it(
    named: tuple[str, ...], path: str, selected: bool
) -> None:
    assert (path in Selection(named)) is selected


def test_unmatched_names_what_selects_nothing_in_the_order_given() -> None:
    selection = Selection(("b", "docs/ops", "a"))
    assert selection.unmatched(["docs/ops/x", "c"]) == ["b", "a"]
    assert EVERYTHING.unmatched([]) == []
