"""``opswatch init``: a starter config written from what a repository's ops folder holds.

The rules it writes are the seed layout's: the compose file(s) go to ``ops/`` (where docker
compose runs on the server), Dockerfiles and the ops folder's subfolders keep their repository
path. A compose file whose build paths are relative to itself (``build: .``) stays beside its
Dockerfiles instead, and docker compose runs there. Secrets are refused by the built-in ``never``
list, which the file shows as a comment.
"""

from __future__ import annotations

import fnmatch
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

from opswatch.config import Rule
from opswatch.core.rules import BUILTIN_IGNORE, BUILTIN_NEVER, Router
from opswatch.errors import OpswatchError, UsageError
from opswatch.local.buildrules import (
    SourcePlan,
    builds_beside_itself,
    propose_source_rules,
    read_build_needs,
)
from opswatch.paths import write_atomically

CONFIG_NAME = "opswatch.toml"
PREFERRED_OPS = "docs/ops"
COMPOSE_REMOTE = "ops"
DOCKERFILE_PATTERNS = ("Dockerfile", "Dockerfile.*", "*.Dockerfile", "*.dockerfile")
COMPOSE_PATTERNS = ("docker-compose*.yml", "docker-compose*.yaml", "compose*.yml", "compose*.yaml")
SKIP_FOLDERS = {"node_modules", "vendor", "venv", "dist", "build", "target"}
SEARCH_DEPTH = 4

Ask = Callable[[str, list[str]], str]  # (question, choices) → the chosen one


@dataclass(frozen=True)
class Layout:
    root: Path  # the repository
    ops: str  # the ops folder, POSIX, relative to root
    dockerfiles: tuple[str, ...]  # names directly in the ops folder
    compose_files: tuple[str, ...]
    folders: tuple[str, ...]  # subfolders that go along (runbooks, quality_gates …)
    refused: tuple[str, ...]  # what ``never`` keeps home: .env, data/, certs/ …
    services: tuple[tuple[str, str | None], ...]  # (service, its Dockerfile) from compose
    sources: SourcePlan = field(default_factory=SourcePlan)  # rules for what the Dockerfiles copy
    # Where the compose file goes, relative to remote.root: ``ops/`` as in the seed, or its own
    # folder when its build paths are relative to itself (so they resolve there as they do here).
    compose_to: str = COMPOSE_REMOTE


def repository_root(start: Path) -> Path:
    """The nearest folder upward holding ``.git``; ``start`` itself outside git."""
    for folder in (start, *start.parents):
        if (folder / ".git").exists():
            return folder
    return start


def _matches(name: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def _is_ops_folder(folder: Path) -> bool:
    try:
        names = [entry.name for entry in folder.iterdir() if entry.is_file()]
    except OSError:
        return False
    patterns = DOCKERFILE_PATTERNS + COMPOSE_PATTERNS
    return any(_matches(name, patterns) for name in names)


def candidate_ops_folders(root: Path) -> list[str]:
    """Folders (POSIX, relative) holding a Dockerfile or compose file; ``docs/ops`` first."""
    found: list[str] = []
    for current, dirs, _files in os.walk(root):
        depth = len(Path(current).relative_to(root).parts)
        dirs[:] = sorted(
            d
            for d in dirs
            if not d.startswith(".") and d not in SKIP_FOLDERS and depth < SEARCH_DEPTH
        )
        rel = Path(current).relative_to(root).as_posix()
        if _is_ops_folder(Path(current)):
            found.append("" if rel == "." else rel)
    return sorted(found, key=lambda f: (f != PREFERRED_OPS, f.count("/"), f))


def find_ops_folder(root: Path, explicit: str | None, ask: Ask | None) -> str:
    """``--from``, else ``docs/ops``, else the one candidate, else ask (on a TTY), else fail."""
    if explicit is not None:
        folder = Path(explicit)
        full = folder if folder.is_absolute() else root / folder
        if not full.is_dir():
            raise UsageError(f"--from {explicit}: no such folder")
        try:
            rel = full.resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            raise UsageError(f"--from {explicit}: not inside the repository {root}") from None
        return "" if rel == "." else rel
    if (root / PREFERRED_OPS).is_dir():
        return PREFERRED_OPS
    candidates = candidate_ops_folders(root)
    if len(candidates) == 1:
        return candidates[0]
    if ask is not None:
        return ask("Which folder holds the ops files (Dockerfiles, compose file)?", candidates)
    if not candidates:
        raise UsageError(f"no folder with a Dockerfile or compose file in {root}; pass --from")
    raise UsageError(f"several ops folders ({', '.join(candidates)}): pick one with --from")


def compose_services(path: Path) -> list[tuple[str, str | None]]:
    """(service, ``build.dockerfile``) for each service of a compose file; [] if unreadable."""
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return []
    services = doc.get("services") if isinstance(doc, dict) else None
    if not isinstance(services, dict):
        return []
    found: list[tuple[str, str | None]] = []
    for name, spec in services.items():
        build = spec.get("build") if isinstance(spec, dict) else None
        dockerfile = build.get("dockerfile") if isinstance(build, dict) else None
        found.append((str(name), str(dockerfile) if dockerfile else None))
    return found


def inspect(root: Path, ops: str) -> Layout:
    folder = root / ops
    files = sorted(e.name for e in folder.iterdir() if e.is_file())
    router = Router((), "/")  # no rules: only the built-in never and ignore lists
    folders: list[str] = []
    refused = [f for f in files if router.never_reason(f)]
    for entry in sorted(e.name for e in folder.iterdir() if e.is_dir()):
        if router.never_reason(entry + "/"):
            refused.append(entry + "/")
        elif not entry.startswith(".") and not _matches(entry + "/", BUILTIN_IGNORE):
            folders.append(entry)
    compose = tuple(f for f in files if _matches(f, COMPOSE_PATTERNS))
    main = main_compose_file(compose)
    layout = Layout(
        root=root,
        ops=ops,
        dockerfiles=tuple(f for f in files if _matches(f, DOCKERFILE_PATTERNS)),
        compose_files=compose,
        folders=tuple(folders),
        refused=tuple(refused),
        services=tuple(compose_services(folder / main)) if main else (),
    )
    if main is None:
        return layout
    compose_local = f"{ops}/{main}" if ops else main
    if builds_beside_itself(root, compose_local, COMPOSE_REMOTE):
        layout = replace(layout, compose_to=ops or ".")
    needs = read_build_needs(root, compose_local, layout.compose_to)
    plan = propose_source_rules(root, needs, list(ops_rules(layout)))
    return replace(layout, sources=plan)


def ops_rules(layout: Layout) -> tuple[Rule, ...]:
    """The rules ``render`` writes for the ops folder itself."""
    match = dockerfile_patterns(layout.dockerfiles) + [f + "/" for f in layout.folders]
    rest = Rule(layout.ops, tuple(match), (layout.ops,))
    if not layout.compose_files:
        return (rest,)
    return (Rule(layout.ops, layout.compose_files, (layout.compose_to,)), rest)


def main_compose_file(names: tuple[str, ...]) -> str | None:
    """The production compose file if there is one, else the first."""
    for name in names:
        if "prod" in name:
            return name
    return names[0] if names else None


def dockerfile_patterns(names: tuple[str, ...]) -> list[str]:
    patterns = (
        ["Dockerfile.*"] if not names or any(n.startswith("Dockerfile.") for n in names) else []
    )
    return patterns + [n for n in names if not n.startswith("Dockerfile.")]


def _q(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)  # a JSON string is a TOML basic string


def _list(values: list[str]) -> str:
    return "[" + ", ".join(_q(v) for v in values) + "]"


def render(layout: Layout, host: str, remote_root: str) -> str:
    ops = layout.ops or "."
    lines = [
        "# opswatch: which files of this repository go to which folder of the server.",
        "# `opswatch sync --dry-run` shows what the rules select; `opswatch run` keeps it in step.",
        "",
        "[local]",
        "# The repository; every local path below is relative to it.",
        'root = "."',
        "",
        "[remote]",
        "# An ~/.ssh/config alias or a host name; the ssh config applies (User, Port, keys …).",
        f"host = {_q(host)}",
        "# The repository's copy on the server (~/x: below the login's home there);",
        "# remote folders below are relative to it.",
        f"root = {_q(remote_root)}",
        '# user = "root"',
        "# port = 22",
        "",
        "[sync]",
        "debounce_ms = 300",
        "# true: deleting a file here deletes the copy opswatch pushed.",
        "delete = false",
        "# A batch of more files, or one after a branch switch, waits for `opswatch flush`.",
        "hold_over = 100",
        "ignore = []",
        "# Always refused at any depth, whatever the rules say (built in):",
        "#   " + " ".join(BUILTIN_NEVER),
        "# Add your own patterns here:",
        "never = []",
        "",
    ]
    if layout.compose_files:
        lines += [
            _compose_comment(layout),
            "[[rule]]",
            f"from = {_q(ops)}",
            f"match = {_list(list(layout.compose_files))}",
            f"to = {_q(layout.compose_to)}",
            "",
        ]
    match = dockerfile_patterns(layout.dockerfiles) + [f + "/" for f in layout.folders]
    lines += [
        "# Dockerfiles and the ops subfolders keep their repository path.",
        "[[rule]]",
        f"from = {_q(ops)}",
        f"match = {_list(match)}",
        f"to = {_q(ops)}",
        "",
    ]
    return "\n".join(lines + render_sources(layout.sources) + _render_rebuild(layout)) + "\n"


def _compose_comment(layout: Layout) -> str:
    if layout.compose_to == COMPOSE_REMOTE:
        return "# The compose file(s) go to ops/, where docker compose runs on the server."
    return (
        f"# The compose file(s) stay beside the Dockerfiles in {layout.compose_to}/: their build\n"
        "# paths are relative to themselves. docker compose runs there on the server."
    )


def render_sources(plan: SourcePlan) -> list[str]:
    """The build-source rules, each with the COPY/ADD lines that need it."""
    if not plan.rules and not plan.notes:
        return []
    lines = [
        "# What the Dockerfiles copy from their build context: sent to the same place below",
        "# remote.root, where the build finds it (secrets stay here: `never` still applies).",
    ]
    for note in plan.notes:
        lines.append(f"# - {note}")
    lines.append("")
    for rule in plan.rules:
        lines += [f"# for {why}" for why in rule.why]
        lines += ["[[rule]]", f"from = {_q(rule.source)}"]
        if rule.match is not None:
            lines.append(f"match = {_list(list(rule.match))}")
        lines += [f"to = {_q(rule.to)}", ""]
    return lines


def _render_rebuild(layout: Layout) -> list[str]:
    main = main_compose_file(layout.compose_files)
    lines = [
        '# "auto": after a batch lands, rebuild and redeploy the services it affects.',
        "[rebuild]",
        'mode = "off"',
        "# Where docker compose runs on the server, relative to remote.root.",
        f"compose_dir = {_q(layout.compose_to)}",
        "# A service whose health URL fails after `up` gets the batch's files put back,",
        "# is rebuilt and checked again (see `opswatch history`, `opswatch undo`).",
        'on_failure = "rollback"',
    ]
    if main is None:
        lines.append('# compose_file = "docs/ops/docker-compose.production.yml"')
        return lines
    compose_path = f"{layout.ops}/{main}" if layout.ops else main
    lines += [f"compose_file = {_q(compose_path)}", ""]
    if not layout.services:
        return lines
    lines += [
        f"# Services in {compose_path}",
        "# (its build.dockerfile entries already map Dockerfiles to them).",
        "# Uncomment to add source paths that affect a service, or a URL to check after `up`:",
    ]
    for name, dockerfile in layout.services:
        note = f"  # {dockerfile}" if dockerfile else ""
        lines += [
            "#",
            "# [[rebuild.service]]",
            f"# name = {_q(name)}{note}",
            '# when = ["src/**"]',
            '# health = "https://example.com/health"',
        ]
    return lines


def locally_expanded(remote_root: str, local_home: Path) -> str | None:
    """The part below the local home when ``remote_root`` looks like ``~/x`` the local shell
    expanded (``/home/me/x``); None when it does not start with the local home."""
    home = local_home.as_posix().rstrip("/")
    if not home or not remote_root.startswith(home + "/"):
        return None
    return remote_root[len(home) + 1 :].strip("/") or None


def write_config(path: Path, text: str, *, force: bool) -> None:
    if path.exists() and not force:
        raise OpswatchError(f"{path} exists; `opswatch init --force` overwrites it")
    write_atomically(path, text)
