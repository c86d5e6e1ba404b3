"""The config file: TOML in, frozen dataclasses out, every problem reported at once.

``parse_config`` is pure (a mapping and the file it came from); ``load_config`` only reads the file.
Unknown keys are errors: a typo in ``never`` must not silently let a secret through. The keys a
table accepts are the fields of the dataclass it is read into (``*_KEYS``), nothing listed apart.
"""

from __future__ import annotations

import os
import re
import stat
import tomllib
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path, PurePosixPath
from typing import Any

import pathspec
import platformdirs

from opswatch.errors import ConfigError
from opswatch.model import SERVICE_NAME_RULE, valid_service_name

CONFIG_ENV = "OPSWATCH_CONFIG"
CONFIG_NAME = "opswatch.toml"


@dataclass(frozen=True)
class RemoteConfig:
    host: str
    root: str  # POSIX path on the server: absolute, or relative to the login's home
    user: str | None = None
    port: int | None = None
    ssh_config: Path | None = None
    known_hosts: Path | None = None
    identity_file: Path | None = None


@dataclass(frozen=True)
class SyncConfig:
    debounce_ms: int = 300
    max_delay_ms: int = 2000
    delete: bool = False
    hold_over: int = 100
    ignore: tuple[str, ...] = ()
    never: tuple[str, ...] = ()
    reconcile_interval_s: int = 600
    allow_hard_links: bool = False  # a file with several hard links may be a secret's other name


@dataclass(frozen=True)
class Rule:
    source: str  # the rule's ``from``: POSIX folder relative to local.root, "" for the root itself
    match: tuple[str, ...] | None  # None: everything under ``source``
    to: tuple[str, ...]  # remote folders relative to remote.root


@dataclass(frozen=True)
class ServiceConfig:
    name: str
    when: tuple[str, ...] = ()
    health: str | None = None


@dataclass(frozen=True)
class RebuildConfig:
    mode: str = "off"
    compose_dir: str = "ops"
    compose_file: str | None = None
    build: str = "docker compose build {service}"
    up: str = "docker compose up -d {service}"
    apply: str = "docker compose up -d"
    check: str = "docker compose config -q"
    timeout_s: int = 900
    health_timeout_s: int = 60
    on_failure: str = "keep"  # keep | rollback: what a failed health check after `up` does
    services: tuple[ServiceConfig, ...] = ()


@dataclass(frozen=True)
class HistoryConfig:
    max_mb: int = 200

    @property
    def max_bytes(self) -> int:
        return self.max_mb * 1024 * 1024


@dataclass(frozen=True)
class Config:
    source: Path
    local_root: Path
    remote: RemoteConfig
    sync: SyncConfig
    rules: tuple[Rule, ...]
    rebuild: RebuildConfig
    notify: bool = False
    history: HistoryConfig = HistoryConfig()

    @property
    def watched_folders(self) -> tuple[str, ...]:
        """The union of the rules' ``from`` folders, without folders nested in another."""
        folders = sorted(set(rule.source for rule in self.rules))
        kept: list[str] = []
        for folder in folders:
            if not any(_is_within(folder, outer) for outer in kept):
                kept.append(folder)
        return tuple(kept)


def _keys(cls: type, **toml_names: str | None) -> frozenset[str]:
    """The TOML keys of a dataclass's fields: the field's name unless ``toml_names`` gives one
    (None: a field no key sets)."""
    names = (toml_names.get(f.name, f.name) for f in fields(cls))
    return frozenset(name for name in names if name is not None)


TOP_KEYS = _keys(Config, source=None, local_root="local", rules="rule")
LOCAL_KEYS = frozenset({"root"})  # local.root: Config.local_root
REMOTE_KEYS = _keys(RemoteConfig)
SYNC_KEYS = _keys(SyncConfig)
RULE_KEYS = _keys(Rule, source="from")
REBUILD_KEYS = _keys(RebuildConfig, services="service")
SERVICE_KEYS = _keys(ServiceConfig)
HISTORY_KEYS = _keys(HistoryConfig)


def _is_within(path: str, folder: str) -> bool:
    return folder == "" or path == folder or path.startswith(folder + "/")


class _Reader:
    """Typed access to one table of the TOML document that records problems instead of raising."""

    def __init__(self, shown: str, problems: list[str]) -> None:
        self.shown = shown  # the config's path as the user gave it
        self.problems = problems

    def problem(self, key: str, message: str) -> None:
        # A key of the document itself arrives as ".notify": it has no table before the dot.
        self.problems.append(f"{self.shown}: {key.removeprefix('.')}: {message}")

    def table(self, doc: Mapping[str, Any], key: str, allowed: frozenset[str]) -> Mapping[str, Any]:
        value = doc.get(key, {})
        if not isinstance(value, Mapping):
            self.problem(key, f"expected a table, got {_show(value)}")
            return {}
        self.unknown(value, key, allowed)
        return value

    def unknown(self, table: Mapping[str, Any], prefix: str, allowed: frozenset[str]) -> None:
        for name in table:
            if name not in allowed:
                hint = f" (known: {', '.join(sorted(allowed))})"
                self.problem(f"{prefix}.{name}" if prefix else name, "unknown key" + hint)

    def string(self, table: Mapping[str, Any], prefix: str, key: str) -> str | None:
        value = table.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            self.problem(f"{prefix}.{key}", f"expected a non-empty string, got {_show(value)}")
            return None
        if "\0" in value:  # no path or command can hold one; os calls would raise ValueError
            self.problem(f"{prefix}.{key}", "must not contain a NUL character")
            return None
        return value

    def integer(self, table: Mapping[str, Any], prefix: str, key: str, default: int) -> int:
        value = table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            self.problem(f"{prefix}.{key}", f"expected an integer, got {_show(value)}")
            return default
        if value < 0:
            self.problem(f"{prefix}.{key}", f"expected a number >= 0, got {value}")
            return default
        return value

    def boolean(self, table: Mapping[str, Any], prefix: str, key: str, default: bool) -> bool:
        value = table.get(key, default)
        if not isinstance(value, bool):
            self.problem(f"{prefix}.{key}", f"expected true or false, got {_show(value)}")
            return default
        return value

    def strings(
        self, table: Mapping[str, Any], prefix: str, key: str, *, scalar_ok: bool = False
    ) -> tuple[str, ...] | None:
        value = table.get(key)
        if value is None:
            return None
        if scalar_ok and isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            self.problem(f"{prefix}.{key}", f"expected a list of strings, got {_show(value)}")
            return None
        if any("\0" in v for v in value):
            self.problem(f"{prefix}.{key}", "must not contain a NUL character")
            return None
        return tuple(value)

    def patterns(self, table: Mapping[str, Any], prefix: str, key: str) -> tuple[str, ...] | None:
        """``strings`` that must each be a valid gitignore-style pattern."""
        value = self.strings(table, prefix, key)
        for pattern in value or ():
            if (problem := pattern_problem(pattern)) is not None:
                self.problem(f"{prefix}.{key}", f'"{pattern}": {problem}')
                return None
        return value


def pattern_problem(pattern: str) -> str | None:
    """Why ``pattern`` is not a usable gitignore-style pattern, or None when it is."""
    try:
        pathspec.GitIgnoreSpec.from_lines([pattern])
    except (re.error, ValueError) as exc:  # GitIgnorePatternError is a ValueError
        return f"invalid pattern ({exc})"
    return None


def url_problem(url: str) -> str | None:
    """Why ``url`` is not an http(s) URL a health check can ask, or None when it is."""
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - parsing the port is the check
    except ValueError as exc:
        return f'"{url}" is not a valid URL ({exc})'
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f'expected an http(s) URL, got "{url}"'
    return None


def _show(value: object) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, list):
        return "a list"
    return repr(value).lower() if isinstance(value, bool) else repr(value)


def _relative_posix(reader: _Reader, key: str, value: str) -> str | None:
    """A folder below a root: no absolute paths, no ``..``; "." and "" mean the root itself."""
    path = PurePosixPath(value.replace("\\", "/"))
    if path.is_absolute():
        reader.problem(key, f'expected a relative path, got "{value}"')
        return None
    if ".." in path.parts:
        reader.problem(key, f'must not contain "..", got "{value}"')
        return None
    text = str(path)
    return "" if text == "." else text


def _expand(path: str, base: Path) -> Path:
    expanded = Path(os.path.expanduser(path))
    return expanded if expanded.is_absolute() else base / expanded


def _remote_root(reader: _Reader, root: str) -> str | None:
    """``remote.root`` as scp reads a remote path: absolute, or relative to the login's home.

    ``~/x`` and ``x`` both become ``x``: SFTP and the remote shell both start in the login's
    home, so a relative path lands there on every server without knowing where home is.
    """
    text = root
    if text == "~" or text.startswith("~/"):
        text = text[2:] or "."
    elif text.startswith("~"):
        reader.problem(
            "remote.root", f'"{root}": only ~/ (the login\'s own home) is understood, not ~user/'
        )
        return None
    path = PurePosixPath(text)
    if ".." in path.parts:
        reader.problem("remote.root", f'must not contain "..", got "{root}"')
        return None
    return str(path)


def _parse_remote(reader: _Reader, doc: Mapping[str, Any], base: Path) -> RemoteConfig:
    table = reader.table(doc, "remote", REMOTE_KEYS)
    host = reader.string(table, "remote", "host")
    if host is None and "host" not in table:
        reader.problem("remote.host", "required (an ~/.ssh/config alias or a host name)")
    root = reader.string(table, "remote", "root")
    if root is None and "root" not in table:
        reader.problem("remote.root", "required (a path on the server, like ~/portfolio)")
    elif root is not None:
        root = _remote_root(reader, root)
    port = table.get("port")
    if port is not None and (isinstance(port, bool) or not isinstance(port, int)):
        reader.problem("remote.port", f"expected an integer, got {_show(port)}")
        port = None
    elif port is not None and not 0 < port < 65536:
        reader.problem("remote.port", f"expected a port between 1 and 65535, got {port}")
        port = None
    paths = {}
    for key in ("ssh_config", "known_hosts", "identity_file"):
        value = reader.string(table, "remote", key)
        paths[key] = _expand(value, base) if value else None
    return RemoteConfig(
        host=host or "",
        root=root or "/",
        user=reader.string(table, "remote", "user"),
        port=port,
        **paths,
    )


def _parse_sync(reader: _Reader, doc: Mapping[str, Any]) -> SyncConfig:
    table = reader.table(doc, "sync", SYNC_KEYS)
    defaults = SyncConfig()
    sync = SyncConfig(
        debounce_ms=reader.integer(table, "sync", "debounce_ms", defaults.debounce_ms),
        max_delay_ms=reader.integer(table, "sync", "max_delay_ms", defaults.max_delay_ms),
        delete=reader.boolean(table, "sync", "delete", defaults.delete),
        hold_over=reader.integer(table, "sync", "hold_over", defaults.hold_over),
        ignore=reader.patterns(table, "sync", "ignore") or (),
        never=reader.patterns(table, "sync", "never") or (),
        reconcile_interval_s=reader.integer(
            table, "sync", "reconcile_interval_s", defaults.reconcile_interval_s
        ),
        allow_hard_links=reader.boolean(
            table, "sync", "allow_hard_links", defaults.allow_hard_links
        ),
    )
    for pattern in sync.never:
        if pattern.startswith("!"):
            reader.problem(
                "sync.never", f'"{pattern}": negations are not allowed, never always wins'
            )
    if sync.max_delay_ms < sync.debounce_ms:
        reader.problem(
            "sync.max_delay_ms",
            f"must be at least sync.debounce_ms ({sync.debounce_ms}), got {sync.max_delay_ms}",
        )
    return sync


def _parse_rules(reader: _Reader, doc: Mapping[str, Any]) -> tuple[Rule, ...]:
    raw = doc.get("rule", [])
    if not isinstance(raw, list) or not all(isinstance(r, Mapping) for r in raw):
        reader.problem("rule", "expected [[rule]] tables")
        return ()
    if not raw:
        reader.problem("rule", "at least one [[rule]] is needed: without rules nothing is synced")
    rules = []
    for index, table in enumerate(raw):
        prefix = f"rule[{index}]"
        reader.unknown(table, prefix, RULE_KEYS)
        source = reader.string(table, prefix, "from")
        if source is None and "from" not in table:
            reader.problem(f"{prefix}.from", "required (a local folder relative to local.root)")
        to = reader.strings(table, prefix, "to", scalar_ok=True)
        if to is None and "to" not in table:
            reader.problem(f"{prefix}.to", "required (a remote folder relative to remote.root)")
        match = reader.patterns(table, prefix, "match")
        source_rel = _relative_posix(reader, f"{prefix}.from", source) if source else None
        to_rel = [_relative_posix(reader, f"{prefix}.to", t) for t in (to or ())]
        if source_rel is not None and to and None not in to_rel:
            rules.append(Rule(source_rel, match, tuple(t for t in to_rel if t is not None)))
    return tuple(rules)


def _parse_service(reader: _Reader, table: object, prefix: str) -> ServiceConfig | None:
    if not isinstance(table, Mapping):
        reader.problem(prefix, f"expected a [[rebuild.service]] table, got {_show(table)}")
        return None
    reader.unknown(table, prefix, SERVICE_KEYS)
    name = reader.string(table, prefix, "name")
    if name is None:
        if "name" not in table:
            reader.problem(f"{prefix}.name", "required (the compose service name)")
        return None
    if not valid_service_name(name):
        rule = f"is not a compose service name ({SERVICE_NAME_RULE})"
        reader.problem(f"{prefix}.name", f'"{name}" {rule}')
        return None
    health = reader.string(table, prefix, "health")
    if health is not None and (problem := url_problem(health)) is not None:
        reader.problem(f"{prefix}.health", problem)
        health = None
    return ServiceConfig(name, reader.strings(table, prefix, "when") or (), health)


def _parse_rebuild(reader: _Reader, doc: Mapping[str, Any]) -> RebuildConfig:
    table = reader.table(doc, "rebuild", REBUILD_KEYS)
    defaults = RebuildConfig()
    mode = reader.string(table, "rebuild", "mode") or defaults.mode
    if mode not in ("off", "auto"):
        reader.problem("rebuild.mode", f'expected "off" or "auto", got "{mode}"')
    on_failure = reader.string(table, "rebuild", "on_failure") or defaults.on_failure
    if on_failure not in ("keep", "rollback"):
        reader.problem("rebuild.on_failure", f'expected "keep" or "rollback", got "{on_failure}"')
    compose_dir = reader.string(table, "rebuild", "compose_dir") or defaults.compose_dir
    compose_dir = _relative_posix(reader, "rebuild.compose_dir", compose_dir) or ""
    raw_services = table.get("service", [])
    services: list[ServiceConfig] = []
    if not isinstance(raw_services, list):
        reader.problem("rebuild.service", "expected [[rebuild.service]] tables")
        raw_services = []
    for index, service in enumerate(raw_services):
        parsed = _parse_service(reader, service, f"rebuild.service[{index}]")
        if parsed is not None:
            services.append(parsed)

    def text(key: str, default: str) -> str:
        return reader.string(table, "rebuild", key) or default

    return RebuildConfig(
        mode=mode,
        compose_dir=compose_dir,
        compose_file=reader.string(table, "rebuild", "compose_file"),
        build=text("build", defaults.build),
        up=text("up", defaults.up),
        apply=text("apply", defaults.apply),
        check=text("check", defaults.check),
        timeout_s=reader.integer(table, "rebuild", "timeout_s", defaults.timeout_s),
        health_timeout_s=reader.integer(
            table, "rebuild", "health_timeout_s", defaults.health_timeout_s
        ),
        on_failure=on_failure,
        services=tuple(services),
    )


def _parse_history(reader: _Reader, doc: Mapping[str, Any]) -> HistoryConfig:
    table = reader.table(doc, "history", HISTORY_KEYS)
    return HistoryConfig(max_mb=reader.integer(table, "history", "max_mb", HistoryConfig.max_mb))


def parse_config(doc: Mapping[str, Any], source: Path, shown: str | None = None) -> Config:
    """Validate a parsed TOML document; raise ``ConfigError`` listing every problem found.

    ``shown`` is how problems name the file: the path as the user gave it (default ``source``).
    """
    problems: list[str] = []
    reader = _Reader(str(source) if shown is None else shown, problems)
    reader.unknown(doc, "", TOP_KEYS)
    local = reader.table(doc, "local", LOCAL_KEYS)
    base = source.parent
    root_text = reader.string(local, "local", "root")
    local_root = _expand(root_text, base) if root_text else base
    config = Config(
        source=source,
        local_root=Path(os.path.abspath(local_root)),
        remote=_parse_remote(reader, doc, base),
        sync=_parse_sync(reader, doc),
        rules=_parse_rules(reader, doc),
        rebuild=_parse_rebuild(reader, doc),
        notify=reader.boolean(doc, "", "notify", False),
        history=_parse_history(reader, doc),
    )
    if problems:
        raise ConfigError(problems)
    return config


CONFIG_CAP = 1024 * 1024  # bytes: a config is a page or two


def _read_config_bytes(path: Path) -> bytes:
    """The config's bytes; a FIFO or device there is refused, never read (it could block)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ConfigError([f"{path}: not a regular file"])
        data = handle.read(CONFIG_CAP + 1)
    if len(data) > CONFIG_CAP:
        raise ConfigError([f"{path}: larger than {CONFIG_CAP // 1024} KiB"])
    return data


def load_config(path: Path) -> Config:
    try:
        doc = tomllib.loads(_read_config_bytes(path).decode("utf-8"))
    except FileNotFoundError:
        raise ConfigError([f"{path}: no such file (see `opswatch init`)"]) from None
    except OSError as exc:
        raise ConfigError([f"{path}: {exc.strerror}"]) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: not valid TOML: {exc}"]) from exc
    except UnicodeDecodeError as exc:  # not UTF-8
        raise ConfigError([f"{path}: not valid UTF-8 (byte {exc.start})"]) from exc
    except ValueError as exc:  # a NUL in the path given
        raise ConfigError([f"{path!r}: not a usable path ({exc})"]) from exc
    return parse_config(doc, Path(os.path.abspath(path)), str(path))


def find_config(explicit: Path | None, start: Path | None = None) -> Path:
    """``--config``, else ``$OPSWATCH_CONFIG``, else the nearest ``opswatch.toml`` in ``start``
    (the current folder) or one of its parents, as git finds ``.git``, else the platform dir."""
    if explicit is not None:
        return explicit
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV])
    here = Path.cwd() if start is None else start
    for folder in (here, *here.parents):
        candidate = folder / CONFIG_NAME
        if candidate.is_file():
            return Path(CONFIG_NAME) if folder == here and start is None else candidate
    return Path(platformdirs.user_config_dir("opswatch", appauthor=False)) / "config.toml"
