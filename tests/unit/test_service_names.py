"""One rule for compose service names, the same for every caller that meets one."""

from __future__ import annotations

from pathlib import Path

import pytest

from opswatch.cli.rebuild import run_rebuild
from opswatch.config import parse_config
from opswatch.core.compose import load_compose, read_project
from opswatch.errors import ConfigError, UsageError
from opswatch.model import valid_service_name

SOURCE = Path("/home/dev/repo/opswatch.toml")
NAMES = [
    ("api.v2", True),  # refused by [[rebuild.service]] once, accepted by compose
    ("Web_1", True),
    ("_private", True),
    ("x", True),
    ("-rm", False),  # would be an option of `docker compose`
    ("a b", False),
    ("a;rm -rf /", False),
    ("a/b", False),
    ("ü", False),
]
IDS = [name for name, _ in NAMES]


def config_with_service(name: str) -> dict[str, object]:
    return {
        "remote": {"host": "droplet", "root": "/root/portfolio"},
        "rule": [{"from": "docs/ops", "to": "docs/ops"}],
        "rebuild": {"service": [{"name": name}]},
    }


@pytest.mark.parametrize(("name", "valid"), NAMES, ids=IDS)
def test_the_rule(name: str, valid: bool) -> None:
    assert valid_service_name(name) is valid


@pytest.mark.parametrize(("name", "valid"), NAMES, ids=IDS)
def test_the_config_takes_what_the_rule_takes(name: str, valid: bool) -> None:
    if valid:
        config = parse_config(config_with_service(name), SOURCE)
        assert [s.name for s in config.rebuild.services] == [name]
    else:
        refused = r"rebuild\.service\[0\]\.name: .* not a compose service"
        with pytest.raises(ConfigError, match=refused):
            parse_config(config_with_service(name), SOURCE)


@pytest.mark.parametrize(("name", "valid"), NAMES, ids=IDS)
def test_the_compose_file_takes_what_the_rule_takes(name: str, valid: bool) -> None:
    text = f'services:\n  "{name}":\n    image: x\n'
    project = read_project(load_compose(text, "compose.yml"), "/srv/ops/compose.yml")
    assert (name in project.services) is valid


@pytest.mark.parametrize(("name", "valid"), NAMES, ids=IDS)
def test_the_rebuild_command_takes_what_the_rule_takes(name: str, valid: bool) -> None:
    config = parse_config(config_with_service("other"), SOURCE)
    with pytest.raises(UsageError) as caught:
        run_rebuild(config, (name,))  # no server is reached: each name is refused before
    said = str(caught.value)
    if valid:
        assert said == f"{name!r} is not a service of rebuild.service"
    else:
        assert "is not a compose service name" in said
