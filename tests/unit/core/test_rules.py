"""Routing, ignore and never: table-driven, no I/O."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from opswatch.config import Rule
from opswatch.core.rules import Router, Verdict

ROOT = "/root/portfolio"
SEED_RULES = (
    Rule("docs/ops", ("docker-compose.production.yml",), ("ops",)),
    Rule("docs/ops", ("Dockerfile.*", "runbooks/", "quality_gates/"), ("docs/ops",)),
)


@pytest.fixture
def router() -> Router:
    return Router(SEED_RULES, ROOT)


@pytest.mark.parametrize(
    ("path", "targets"),
    [
        (
            "docs/ops/docker-compose.production.yml",
            ("/root/portfolio/ops/docker-compose.production.yml",),
        ),
        (
            "docs/ops/Dockerfile.coda-mcp-gateway",
            ("/root/portfolio/docs/ops/Dockerfile.coda-mcp-gateway",),
        ),
        ("docs/ops/runbooks/deploy.md", ("/root/portfolio/docs/ops/runbooks/deploy.md",)),
        ("docs/ops/runbooks/deep/er/x.md", ("/root/portfolio/docs/ops/runbooks/deep/er/x.md",)),
        ("docs/ops/quality_gates/check.sh", ("/root/portfolio/docs/ops/quality_gates/check.sh",)),
    ],
)
def test_seed_layout_routes_each_file_to_its_folder(
    router: Router, path: str, targets: tuple[str, ...]
) -> None:
    decision = router.decide(path)
    assert decision.verdict is Verdict.ROUTED
    assert decision.targets == targets


@pytest.mark.parametrize(
    ("path", "verdict"),
    [
        ("docs/ops/README.md", Verdict.UNROUTED),
        ("docs/other/Dockerfile.x", Verdict.UNROUTED),
        ("docs/ops/.env", Verdict.REFUSED),
        ("docs/ops/.env.production", Verdict.REFUSED),
        ("docs/ops/data/x", Verdict.REFUSED),
        ("docs/ops/runbooks/.env", Verdict.REFUSED),
        ("docs/ops/runbooks/data/dump.sql", Verdict.REFUSED),
        ("docs/ops/certs/site.pem", Verdict.REFUSED),
        ("docs/ops/runbooks/server.key", Verdict.REFUSED),
        ("docs/ops/runbooks/id_ed25519.pub", Verdict.REFUSED),
        ("docs/ops/.Dockerfile.x.swp", Verdict.IGNORED),
        ("docs/ops/runbooks/4913", Verdict.IGNORED),
        ("docs/ops/runbooks/deploy.md~", Verdict.IGNORED),
        ("docs/ops/runbooks/.#deploy.md", Verdict.IGNORED),
        ("docs/ops/runbooks/#deploy.md#", Verdict.IGNORED),
        ("docs/ops/runbooks/deploy.md___jb_tmp___", Verdict.IGNORED),
        ("docs/ops/runbooks/deploy.md___jb_old___", Verdict.IGNORED),
        ("docs/ops/runbooks/.DS_Store", Verdict.IGNORED),
        ("docs/ops/runbooks/.git/config", Verdict.IGNORED),
    ],
)
def test_unrouted_refused_and_ignored(router: Router, path: str, verdict: Verdict) -> None:
    assert router.decide(path).verdict is verdict


def test_first_matching_rule_wins() -> None:
    rules = (Rule("docs/ops", ("Dockerfile.*",), ("first",)), Rule("docs/ops", None, ("second",)))
    router = Router(rules, ROOT)
    assert router.decide("docs/ops/Dockerfile.a").targets == ("/root/portfolio/first/Dockerfile.a",)
    assert router.decide("docs/ops/notes.md").targets == ("/root/portfolio/second/notes.md",)


def test_a_list_of_folders_fans_out() -> None:
    router = Router((Rule("docs/ops", None, ("a", "b/c")),), ROOT)
    assert router.decide("docs/ops/x").targets == ("/root/portfolio/a/x", "/root/portfolio/b/c/x")


def test_a_rule_for_everything_still_never_sends_secrets() -> None:
    router = Router((Rule("", None, ("",)),), ROOT, never=["*.sqlite"])
    for path in ("docs/ops/.env", "docs/ops/data/x", "runbooks/.env", "x/db.sqlite", "data/"):
        assert router.decide(path).verdict is Verdict.REFUSED, path
    assert router.decide("docs/ops/ok.md").verdict is Verdict.ROUTED


def test_user_ignore_and_ignore_files() -> None:
    router = Router(
        SEED_RULES, ROOT, ignore=["*.draft.md"], ignore_files={"docs/ops/runbooks": ["old/"]}
    )
    assert router.decide("docs/ops/runbooks/a.draft.md").verdict is Verdict.IGNORED
    assert router.decide("docs/ops/runbooks/old/a.md").verdict is Verdict.IGNORED
    assert router.decide("docs/ops/runbooks/new/a.md").verdict is Verdict.ROUTED
    router.set_ignore_file("docs/ops/runbooks", None)
    assert router.decide("docs/ops/runbooks/old/a.md").verdict is Verdict.ROUTED


def test_excluded_folders_are_pruned(router: Router) -> None:
    assert (
        router.excluded_folder(
            "docs/ops/data",
        )
        is not None
    )
    assert router.excluded_folder("docs/ops/.git") == "ignored"
    assert router.excluded_folder("docs/ops/runbooks") is None


def test_dot_dot_never_leaves(router: Router) -> None:
    assert router.decide("docs/ops/../../etc/passwd").verdict is Verdict.REFUSED


segment = st.text(alphabet="abcdefgh._-", min_size=1, max_size=8).filter(
    lambda s: s not in (".", "..")
)


@given(
    before=st.lists(segment, max_size=3),
    secret=st.sampled_from([".env", ".env.local", "data/x", "certs/y", "k.pem", "s.key", "id_rsa"]),
)
def test_never_always_wins_whatever_the_rules(before: list[str], secret: str) -> None:
    router = Router((Rule("", None, ("",)), *SEED_RULES), ROOT)
    path = "/".join([*before, secret])
    assert router.decide(path).verdict is Verdict.REFUSED
