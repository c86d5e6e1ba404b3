"""Every input is data, never a crash: config values, patterns, compose files, names, mtimes,
key blocks and the plan's deletes, each bounded and each failure a typed answer."""

from __future__ import annotations

import os
import posixpath
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from opswatch.config import Rule, load_config, parse_config
from opswatch.core.compose import MAX_NESTING, load_compose
from opswatch.core.keyblock import holds_private_key
from opswatch.core.plan import plan
from opswatch.core.rules import BUILTIN_NEVER, Router, Verdict, ignore_file_patterns
from opswatch.errors import ConfigError, LocalFileError
from opswatch.model import (
    Conflict,
    LocalFile,
    Pushed,
    Refusal,
    RemoteFile,
    Remove,
    Skip,
    State,
    Status,
    Upload,
    sftp_seconds,
    tail_text,
)
from opswatch.ssh.transfer import NAME_MAX, final_mode, is_temp_name, temp_name

SOURCE = Path("/home/dev/repo/opswatch.toml")
MINIMAL: dict[str, Any] = {
    "remote": {"host": "droplet", "root": "/srv"},
    "rule": [{"from": "docs/ops", "to": "docs/ops"}],
}


def problems(**tables: Any) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config({**MINIMAL, **tables}, SOURCE)
    return "; ".join(caught.value.problems)


# -- config ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tables", "expected"),
    [
        ({"rebuild": {"service": [1]}}, "rebuild.service[0]: expected a [[rebuild.service]] table"),
        ({"rebuild": {"service": ["x"]}}, "rebuild.service[0]: expected a [[rebuild.service]]"),
        ({"local": {"root": "a\0b"}}, "local.root: must not contain a NUL character"),
        ({"sync": {"ignore": ["a\0"]}}, "sync.ignore: must not contain a NUL character"),
        (
            {"rebuild": {"service": [{"name": "web", "health": "http://[::1/x"}]}},
            'rebuild.service[0].health: "http://[::1/x" is not a valid URL',
        ),
        (
            {"rebuild": {"service": [{"name": "web", "health": "http://:80/"}]}},
            "expected an http(s) URL",
        ),
        ({"sync": {"ignore": ["[z-a]"]}}, 'sync.ignore: "[z-a]": invalid pattern'),
        ({"sync": {"never": ["\\"]}}, 'sync.never: "\\": invalid pattern'),
        ({"rule": [{"from": "docs", "to": "x", "match": ["[z-a]"]}]}, "rule[0].match"),
        ({"sync": {"allow_hard_links": "yes"}}, "sync.allow_hard_links: expected true or false"),
    ],
)
def test_bad_values_are_config_problems_not_crashes(tables: dict[str, Any], expected: str) -> None:
    assert expected in problems(**tables)


def test_a_config_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "opswatch.toml"
    path.write_bytes(b'[remote]\nhost = "caf\xe9"\n')
    with pytest.raises(ConfigError, match="not valid UTF-8"):
        load_config(path)


def test_a_nul_in_the_config_path_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="not a usable path"):
        load_config(Path("/tmp/opswatch\0.toml"))


# -- patterns ----------------------------------------------------------------------------------


def test_an_invalid_ignore_pattern_names_the_file_and_line() -> None:
    with pytest.raises(ConfigError, match=r"docs/ops/\.opswatchignore:3: invalid pattern"):
        ignore_file_patterns(["*.log", "# fine", "[z-a]"], "docs/ops/.opswatchignore")


def router(**kwargs: Any) -> Router:
    return Router([Rule("docs/ops", None, ("docs/ops",))], "/srv", **kwargs)


@pytest.mark.parametrize(
    "name",
    [
        ".ENV",
        ".Env.local",
        "prod.env",
        ".envrc",
        "CERTS/a.crt",
        "Data/x",
        "deep/DATA/x",
        "server.KEY",
        "ID_RSA",
        "id_ecdsa",
        "id_dsa",
        "k.p12",
        "k.PFX",
        "k.ppk",
        "k.jks",
        "k.keystore",
        "db.kdbx",
        "id_ed25519.pub",
    ],
)
def test_never_matches_case_insensitively_and_knows_common_key_files(name: str) -> None:
    decision = router().decide(f"docs/ops/{name}")
    assert (decision.verdict, decision.refusal) == (Verdict.REFUSED, Refusal.NEVER)


DOCUMENTED_NEVER = (
    ".env .env.* *.env .envrc data/ certs/ *.pem *.key *.p12 *.pfx *.ppk *.jks *.keystore "
    "*.kdbx id_rsa* id_dsa* id_ecdsa* id_ed25519*"
)


def test_the_builtin_never_list_is_the_documented_one() -> None:
    assert set(BUILTIN_NEVER) == set(DOCUMENTED_NEVER.split(" "))


def test_a_name_that_is_not_utf8_is_refused_with_its_reason() -> None:
    decision = router().decide("docs/ops/bad\udcff.md")
    assert (decision.verdict, decision.refusal) == (Verdict.REFUSED, Refusal.BAD_NAME)


def test_a_held_folder_sends_nothing_until_its_ignore_file_is_fixed() -> None:
    routes = router()
    routes.hold("docs/ops", "docs/ops/.opswatchignore:1: invalid pattern")
    decision = routes.decide("docs/ops/a.md")
    assert decision.refusal is Refusal.IGNORE_FILE and ".opswatchignore:1" in decision.reason
    routes.set_ignore_file("docs/ops", ["*.log"])
    assert routes.decide("docs/ops/a.md").verdict is Verdict.ROUTED


# -- compose -----------------------------------------------------------------------------------


@pytest.mark.parametrize("opener", ["[", "{a: ", "- "])
def test_a_compose_file_nested_too_deep_is_a_local_file_error(opener: str) -> None:
    text = opener * 5000
    with pytest.raises(LocalFileError, match=f"nested deeper than {MAX_NESTING}"):
        load_compose(text, "compose.yml")


def test_ordinary_nesting_still_loads() -> None:
    assert load_compose("services:\n  a:\n    build:\n      args: [1, [2]]\n", "c.yml")


# -- key blocks --------------------------------------------------------------------------------

KEYS = [
    "-----BEGIN OPENSSH PRIVATE KEY-----\nb3Bl\n",
    "-----BEGIN RSA PRIVATE KEY-----\nMII\n",
    "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMII\n",
    "-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nlQ\n",
    "PuTTY-User-Key-File-2: ssh-rsa\nEncryption: none\n",
]


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("encoding", ["utf-8", "utf-16", "utf-16-le", "utf-16-be"])
def test_private_key_blocks_are_found_in_any_encoding(key: str, encoding: str) -> None:
    assert holds_private_key(("notes\n" + key).encode(encoding))


@pytest.mark.parametrize(
    "text",
    ["-----BEGIN CERTIFICATE-----\n", "-----BEGIN PGP PUBLIC KEY BLOCK-----\n", "PuTTY is nice"],
)
def test_public_material_is_not_a_private_key(text: str) -> None:
    assert not holds_private_key(text.encode()) and not holds_private_key(text.encode("utf-16"))


# -- names, modes, times -----------------------------------------------------------------------


@given(st.text(min_size=1, max_size=300).filter(lambda n: "/" not in n and "\0" not in n))
def test_temp_names_stay_within_255_bytes_and_are_recognised(name: str) -> None:
    temp = posixpath.basename(temp_name(f"/srv/docs/{name}"))
    assert len(temp.encode("utf-8", errors="surrogateescape")) <= NAME_MAX
    assert is_temp_name(temp)


def test_long_names_keep_distinct_temp_names() -> None:
    one, two = "a" * 250 + "1", "a" * 250 + "2"
    assert temp_name(one)[:-13] != temp_name(two)[:-13]


@pytest.mark.parametrize(
    ("mode", "landed"), [(0o4777, 0o777), (0o2755, 0o755), (0o1644, 0o644), (0o600, 0o600)]
)
def test_setuid_setgid_and_sticky_bits_are_stripped(mode: int, landed: int) -> None:
    assert final_mode(mode, "/srv/x") == landed


@pytest.mark.parametrize(
    ("seconds", "sent"), [(-(10**9), 0), (0, 0), (1_700_000_000, 1_700_000_000), (2**33, 2**32 - 1)]
)
def test_mtimes_are_clamped_to_what_sftp_v3_carries(seconds: int, sent: int) -> None:
    assert sftp_seconds(seconds * 1_000_000_000) == sent


def test_status_texts_keep_their_last_8_kib() -> None:
    text = "x" * 100_000 + "the reason at the end"
    kept = tail_text(text)
    assert len(kept) == 8192 and kept.endswith("the reason at the end")


# -- deletes and unknown files -----------------------------------------------------------------

PUSHED = Pushed("/srv/docs/ops/a.md", "docs/ops/a.md", "0" * 64, 10, 1700 * 10**9, 0o644, 0.0)
SAME = RemoteFile(10, 1700, 0o644)
EDITED = RemoteFile(12, 1900, 0o644)


@pytest.mark.parametrize(
    ("there", "force", "expected"),
    [
        (SAME, False, Remove),
        (None, False, Remove),  # already gone: forgetting it is all there is to do
        (EDITED, False, Conflict),
        (EDITED, True, Remove),
    ],
)
def test_a_delete_is_checked_against_the_server_copy(
    there: RemoteFile | None, force: bool, expected: type
) -> None:
    result = plan(
        ["docs/ops/a.md"],
        router(),
        {"docs/ops/a.md": None},
        {PUSHED.remote: PUSHED},
        {PUSHED.remote: there},
        delete=True,
        force=force,
    )
    [step] = (*result.actions, *result.conflicts)
    assert isinstance(step, expected)


def test_a_delete_whose_server_copy_was_not_looked_at_is_not_sent() -> None:
    result = plan(
        ["docs/ops/a.md"],
        router(),
        {"docs/ops/a.md": None},
        {PUSHED.remote: PUSHED},
        {},
        delete=True,
    )
    assert result.actions == () and isinstance(result.skipped[0], Skip)


LOCAL = LocalFile(10, 1800 * 10**9, 0o644)


@pytest.mark.parametrize(
    ("first_sync", "force", "expected"),
    [(True, False, Upload), (False, False, Conflict), (False, True, Upload)],
)
def test_an_unrecorded_server_file_is_overwritten_only_on_the_first_sync(
    first_sync: bool, force: bool, expected: type
) -> None:
    result = plan(
        ["docs/ops/a.md"],
        router(),
        {"docs/ops/a.md": LOCAL},
        {},
        {PUSHED.remote: SAME},
        delete=False,
        force=force,
        first_sync=first_sync,
    )
    [step] = (*result.actions, *result.conflicts)
    assert isinstance(step, expected)
    if isinstance(step, Conflict):
        assert step.unrecorded


def test_human_status_lists_refusals_even_of_names_that_are_not_utf8() -> None:
    from datetime import UTC, datetime

    from opswatch.cli.control import format_status

    status = Status(State.WATCHING, connected=False, host="droplet").to_json()
    status["refused"] = [{"path": "docs/ops/bad\udcff.md", "reason": "name is not valid UTF-8"}]
    text = format_status(status, datetime.now(UTC))
    assert "refused:     docs/ops/bad\\udcff.md (name is not valid UTF-8)" in text
    text.encode("utf-8")  # printable as it is


COMPOSE = "docs/ops/docker-compose.production.yml"


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (lambda p: p.write_bytes(b"services:\n  web: {image: caf\xe9}\n"), "not valid UTF-8"),
        (lambda p: p.write_text("services: " + "[" * 5000), "nested deeper than 64"),
        (lambda p: p.write_bytes(b"#" * (4 * 1024 * 1024 + 1)), "larger than 4096 KiB"),
        (lambda p: (p.unlink(), os.mkfifo(p)), "not a regular file"),
    ],
)
def test_a_bad_compose_file_fails_the_rebuild_with_a_reason(
    tmp_path: Path, make: Any, problem: str
) -> None:
    from opswatch.rebuild.deploy import ComposeView

    (tmp_path / "docs/ops").mkdir(parents=True)
    (tmp_path / COMPOSE).write_text("services: {}\n")
    doc = {
        **MINIMAL,
        "rule": [{"from": "docs/ops", "to": "ops"}],
        "rebuild": {"mode": "auto", "compose_file": COMPOSE},
    }
    config = parse_config(doc, tmp_path / "opswatch.toml")
    make(tmp_path / COMPOSE)
    found = ComposeView(config, Router.from_config(config).targets).affected([COMPOSE])
    assert found.apply and problem in found.problems[0]


def test_a_config_that_is_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    path = tmp_path / "opswatch.toml"
    os.mkfifo(path)
    with pytest.raises(ConfigError, match="not a regular file"):
        load_config(path)
