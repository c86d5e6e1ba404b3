"""`when` patterns: the folders they name, and the ones that can never match."""

from __future__ import annotations

import pytest

from opswatch.core.rules import Router
from opswatch.core.when import unmatchable_when, when_folders


@pytest.mark.parametrize(
    ("pattern", "watched", "why"),
    [
        ("integrations/mcp/servers/coda/src/**", ["docs/ops"], None),  # watched for it
        ("integrations/*/src/**", ["docs/ops"], None),
        ("*.ts", ["docs/ops"], None),  # matches at any depth in the rules' folders
        ("!docs/ops/x", ["other"], None),
        ("/build.sh", [""], None),  # a rule from the root watches it
        ("/build.sh", ["docs/ops"], "names no folder"),
        ("*/src/**", ["docs/ops"], "names no folder"),
        ("../other/src/**", ["docs/ops"], "outside local.root"),
        ("certs/**", ["docs/ops"], "certs/ is never looked at"),
        ("docs/ops/data/x.csv", ["docs/ops"], "docs/ops/data/ is never looked at"),
    ],
)
def test_a_when_pattern_that_can_never_match_is_named(
    pattern: str, watched: list[str], why: str | None
) -> None:
    router = Router((), "/")
    found = unmatchable_when([("gateway", [pattern])], watched, router.never_reason)
    if why is None:
        assert found == []
    else:
        (problem,) = found
        assert problem.startswith(f'rebuild.service gateway: when "{pattern}" never matches: ')
        assert why in problem


@pytest.mark.parametrize(
    ("patterns", "folders"),
    [
        (["src/**"], ("src",)),
        (["src/api/main.py", "src/**/*.py"], ("src", "src/api")),
        (["integrations/*/src/**"], ("integrations",)),
        (["*.ts", "!src/x", "/build.sh", "../up/**"], ()),
    ],
)
def test_the_folders_when_patterns_name(patterns: list[str], folders: tuple[str, ...]) -> None:
    assert when_folders([("svc", patterns)]) == folders
