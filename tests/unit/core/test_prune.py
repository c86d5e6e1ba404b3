"""Which remote folders removes may have emptied: between the file and its rule's `to` only."""

from __future__ import annotations

import pytest

from opswatch.config import Rule
from opswatch.core.prune import emptied_folders

RULES = (
    Rule("docs/ops", ("docker-compose.production.yml",), ("ops",)),
    Rule("docs/ops", ("Dockerfile.*", "runbooks/"), ("docs/ops",)),
)


@pytest.mark.parametrize(
    ("removed", "folders"),
    [
        # deepest first, never the rule's `to` folder
        (
            [("docs/ops/runbooks/old/deep/a.md", "/r/docs/ops/runbooks/old/deep/a.md")],
            ["/r/docs/ops/runbooks/old/deep", "/r/docs/ops/runbooks/old", "/r/docs/ops/runbooks"],
        ),
        ([("docs/ops/docker-compose.production.yml", "/r/ops/docker-compose.production.yml")], []),
        ([("docs/ops/Dockerfile.demo", "/r/docs/ops/Dockerfile.demo")], []),
        # no rule holds it any more: nothing is known of its folders
        ([("elsewhere/x/y.md", "/r/elsewhere/x/y.md")], []),
    ],
)
def test_the_folders_a_remove_may_empty(removed: list[tuple[str, str]], folders: list[str]) -> None:
    assert emptied_folders(removed, RULES, "/r") == folders


def test_a_rule_from_the_root_to_the_root_never_offers_the_root() -> None:
    rules = (Rule("", None, ("",)),)
    assert emptied_folders([("a/b.md", "/r/a/b.md")], rules, "/r") == ["/r/a"]
    assert emptied_folders([("b.md", "/r/b.md")], rules, "/r") == []


def test_a_home_relative_root_is_kept_too() -> None:
    rules = (Rule("docs", None, ("docs",)),)
    found = emptied_folders([("docs/x/y.md", "portfolio/docs/x/y.md")], rules, "portfolio")
    assert found == ["portfolio/docs/x"]
