"""Config parsing: every problem reported at once, each naming the file and the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from opswatch.config import find_config, load_config, parse_config
from opswatch.errors import ConfigError

SOURCE = Path("/home/dev/repo/opswatch.toml")
MINIMAL: dict[str, Any] = {
    "remote": {"host": "droplet", "root": "/root/portfolio"},
    "rule": [{"from": "docs/ops", "to": "docs/ops"}],
}


def with_(**tables: Any) -> dict[str, Any]:
    doc = {
        key: (dict(value) if isinstance(value, dict) else value) for key, value in MINIMAL.items()
    }
    for name, value in tables.items():
        if isinstance(value, dict) and isinstance(doc.get(name), dict):
            doc[name] = {**doc[name], **value}
        else:
            doc[name] = value
    return doc


def problems(doc: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(doc, SOURCE)
    return caught.value.problems


def test_minimal_config_has_the_documented_defaults() -> None:
    config = parse_config(MINIMAL, SOURCE)
    assert config.local_root == SOURCE.parent
    assert config.remote.root == "/root/portfolio"
    assert (config.sync.debounce_ms, config.sync.max_delay_ms) == (300, 2000)
    assert config.sync.delete is False
    assert config.sync.hold_over == 100
    assert config.rebuild.mode == "off"
    assert config.rebuild.on_failure == "keep"
    assert config.history.max_bytes == 200 * 1024 * 1024
    assert config.watched_folders == ("docs/ops",)


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        (with_(sync={"debounce_ms": "fast"}), 'sync.debounce_ms: expected an integer, got "fast"'),
        (with_(sync={"delete": "yes"}), 'sync.delete: expected true or false, got "yes"'),
        (with_(sync={"nevr": [".env"]}), "sync.nevr: unknown key"),
        (
            with_(rebuild={"on_failure": "retry"}),
            'rebuild.on_failure: expected "keep" or "rollback", got "retry"',
        ),
        (with_(history={"max_mb": -1}), "history.max_mb: expected a number >= 0, got -1"),
        (with_(history={"max_gb": 1}), "history.max_gb: unknown key"),
        (with_(sync={"never": ["!.env"]}), "negations are not allowed"),
        (
            with_(remote={"root": "~deploy/portfolio"}),
            'remote.root: "~deploy/portfolio": only ~/',
        ),
        (with_(remote={"port": 70000}), "remote.port: expected a port between 1 and 65535"),
        ({"remote": {"root": "/x"}, "rule": MINIMAL["rule"]}, "remote.host: required"),
        (with_(rule=[{"from": "docs/ops"}]), "rule[0].to: required"),
        (with_(rule=[{"from": "../secrets", "to": "x"}]), 'rule[0].from: must not contain ".."'),
        (with_(rule=[{"from": "docs", "to": "/etc"}]), "rule[0].to: expected a relative path"),
        (with_(rule=[{"from": "docs", "to": "x", "mach": ["*"]}]), "rule[0].mach: unknown key"),
        (with_(rule=[]), "at least one [[rule]]"),
        (with_(rebuild={"mode": "sometimes"}), 'rebuild.mode: expected "off" or "auto"'),
        (
            with_(rebuild={"service": [{"name": "Bad Name!"}]}),
            "rebuild.service[0].name:",
        ),
        (with_(colour="blue"), "colour: unknown key"),
        (
            with_(sync={"debounce_ms": 500, "max_delay_ms": 100}),
            "sync.max_delay_ms: must be at least",
        ),
    ],
)
def test_each_problem_names_file_and_key(doc: dict[str, Any], expected: str) -> None:
    found = problems(doc)
    assert any(expected in p for p in found), found
    assert all(p.startswith(f"{SOURCE}: ") for p in found)


def test_all_problems_are_reported_at_once() -> None:
    doc = with_(sync={"debounce_ms": "fast", "delete": 3}, remote={"root": "~other/x"})
    found = problems(doc)
    assert len(found) == 3


def test_paths_resolve_against_the_config_folder_and_home(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/home/dev")
    doc = with_(
        local={"root": "repo-root"},
        remote={"known_hosts": "~/.ssh/kh", "identity_file": "keys/id"},
    )
    config = parse_config(doc, SOURCE)
    assert config.local_root == Path("/home/dev/repo/repo-root")
    assert config.remote.known_hosts == Path("/home/dev/.ssh/kh")
    assert config.remote.identity_file == Path("/home/dev/repo/keys/id")


def test_to_may_be_a_list_that_fans_out() -> None:
    config = parse_config(with_(rule=[{"from": "docs/ops", "to": ["a", "b"]}]), SOURCE)
    assert config.rules[0].to == ("a", "b")


def test_load_config_reports_bad_toml_with_the_file_name(tmp_path: Path) -> None:
    path = tmp_path / "opswatch.toml"
    path.write_text("[remote\nhost = 1\n")
    with pytest.raises(ConfigError, match=r"opswatch\.toml: not valid TOML"):
        load_config(path)


def test_load_config_reports_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "nope.toml")


def test_the_example_config_parses_and_routes_the_seed_layout() -> None:
    example = Path(__file__).parents[2] / "config" / "opswatch.example.toml"
    config = load_config(example)
    assert config.remote.root == "/root/portfolio"
    assert [rule.to for rule in config.rules] == [
        ("ops",),
        ("docs/ops",),
        ("integrations/mcp/servers/coda/src",),
    ]


@pytest.mark.parametrize(
    ("written", "root"),
    [
        ("/root/portfolio", "/root/portfolio"),
        ("/srv/app/", "/srv/app"),
        ("~/portfolio", "portfolio"),
        ("portfolio", "portfolio"),
        ("./portfolio/", "portfolio"),
        ("~", "."),
        ("~/", "."),
    ],
)
def test_remote_root_is_read_as_scp_reads_a_remote_path(written: str, root: str) -> None:
    """Absolute stays absolute; ``~/x`` and ``x`` are relative to the login's home."""
    config = parse_config(with_(remote={"root": written}), SOURCE)
    assert config.remote.root == root


@pytest.mark.parametrize("written", ["~other/portfolio", "~/../etc", "a/../../b"])
def test_remote_root_refuses_other_homes_and_dot_dot(written: str) -> None:
    found = problems(with_(remote={"root": written}))
    assert any("remote.root" in p for p in found), found


def test_problems_name_the_config_path_as_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "opswatch.toml").write_text('[remote]\nhost = "d"\n')
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as caught:
        load_config(Path("sub/opswatch.toml"))
    assert all(p.startswith("sub/opswatch.toml: ") for p in caught.value.problems)


def test_the_nearest_config_in_a_parent_folder_is_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    deep = tmp_path / "repo" / "docs" / "ops" / "runbooks"
    deep.mkdir(parents=True)
    (tmp_path / "repo" / "opswatch.toml").write_text("")
    (tmp_path / "opswatch.toml").write_text("")  # farther away: not the one
    assert find_config(None, deep) == tmp_path / "repo" / "opswatch.toml"
    monkeypatch.chdir(tmp_path / "repo")
    assert find_config(None) == Path("opswatch.toml")
    monkeypatch.setenv("OPSWATCH_CONFIG", "/elsewhere.toml")
    assert find_config(None, deep) == Path("/elsewhere.toml")
    assert find_config(Path("given.toml"), deep) == Path("given.toml")
