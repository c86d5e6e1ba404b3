"""The keys each config table accepts are the ones its parser reads, and the example shows them."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from opswatch import config
from opswatch.config import parse_config
from opswatch.errors import ConfigError

SOURCE = Path("/home/dev/repo/opswatch.toml")
EXAMPLE = Path(__file__).parents[2] / "config" / "opswatch.example.toml"
WRONG = {"not": "what any key takes"}  # a table: no key of any table accepts one


def minimal() -> dict[str, Any]:
    return {
        "remote": {"host": "droplet", "root": "/root/portfolio"},
        "rule": [{"from": "docs/ops", "to": "docs/ops"}],
        "rebuild": {"service": [{"name": "web"}]},
    }


def placed(table: str, key: str) -> tuple[dict[str, Any], str]:
    """A config with ``key`` of ``table`` set to a wrong value, and the name its problem uses."""
    doc = minimal()
    if table == "":
        doc[key] = WRONG
        return doc, key
    if table == "rule":
        doc["rule"][0][key] = WRONG
        return doc, f"rule[0].{key}"
    if table == "rebuild.service":
        doc["rebuild"]["service"][0][key] = WRONG
        return doc, f"rebuild.service[0].{key}"
    doc.setdefault(table, {})[key] = WRONG
    return doc, f"{table}.{key}"


TABLES = {
    "": config.TOP_KEYS,
    "local": config.LOCAL_KEYS,
    "remote": config.REMOTE_KEYS,
    "sync": config.SYNC_KEYS,
    "rule": config.RULE_KEYS,
    "rebuild": config.REBUILD_KEYS,
    "rebuild.service": config.SERVICE_KEYS,
}
ACCEPTED = [(table, key) for table, keys in TABLES.items() for key in sorted(keys)]


@pytest.mark.parametrize(("table", "key"), ACCEPTED, ids=[f"{t}.{k}" for t, k in ACCEPTED])
def test_every_accepted_key_is_read(table: str, key: str) -> None:
    """A key the parser accepts but never looked at would be silently ignored."""
    doc, name = placed(table, key)
    with pytest.raises(ConfigError) as caught:
        parse_config(doc, SOURCE)
    assert any(p.startswith(f"{SOURCE}: {name}") for p in caught.value.problems), (
        caught.value.problems
    )


@pytest.mark.parametrize(("table", "key"), ACCEPTED, ids=[f"{t}.{k}" for t, k in ACCEPTED])
def test_every_accepted_key_is_in_the_example(table: str, key: str) -> None:
    text = EXAMPLE.read_text()
    if table == "":
        assert re.search(rf"^#? ?(\[\[?{key}\]\]?|{key} =)", text, re.MULTILINE), key
        return
    if (table, key) == ("rebuild", "service"):
        assert "[[rebuild.service]]" in text
        return
    header = re.escape(f"[{table}]") if table not in ("rule", "rebuild.service") else None
    section = text
    if header is not None:
        found = re.search(rf"^#? ?{header}$(.*?)(^#? ?\[|\Z)", text, re.MULTILINE | re.DOTALL)
        assert found, f"[{table}] is not in the example"
        section = found.group(1)
    assert re.search(rf"^#? ?{key} =", section, re.MULTILINE), f"{table}.{key}"


def test_an_unknown_key_names_the_keys_the_table_accepts() -> None:
    doc = minimal()
    doc["sync"] = {"nevr": []}
    with pytest.raises(ConfigError, match=r"sync\.nevr: unknown key \(known: allow_hard_links, "):
        parse_config(doc, SOURCE)
