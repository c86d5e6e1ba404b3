"""First contact, as a person reads it: plain lines, helpful errors, nothing raw on a terminal."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import click

from conftest import WriteConfig
from daemon_process import opswatch, opswatch_command
from keytools import on_terminal
from opswatch.cli.main import cli
from opswatch.demo.sshd import LocalSshd
from opswatch.logs import escaped

RUNBOOK = "docs/ops/runbooks/deploy.md"
# A structlog console or JSON line: an ISO timestamp, or a logger name like "opswatch.remote".
MACHINE_LOG = re.compile(r"\d{4}-\d\d-\d\dT?\s?\d\d:\d\d|opswatch\.(remote|daemon)|\"event\"")
INTERNAL_DOCUMENTS = re.compile(r"INTERFACE|DESIGN|STYLE|\.md\b")


def every_command(group: click.Group, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [path]
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            found += every_command(command, (*path, name))
        else:
            found.append((*path, name))
    return found


def test_no_help_text_names_an_internal_document() -> None:
    for path in every_command(cli):
        done = subprocess.run(
            [*opswatch_command(), *path, "--help"], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, (path, done.stderr)
        assert not INTERNAL_DOCUMENTS.search(done.stdout), (path, done.stdout)


def test_sync_and_verify_on_a_terminal_print_human_lines(
    sshd_server: LocalSshd,
    repo: Path,
    remote_root: Path,
    write_config: WriteConfig,
    tmp_path: Path,
) -> None:
    # A file that is no key, named before the good one: a warning a person must be able to read.
    (tmp_path / "not-a-key").write_text("hello\n")
    ssh_config = tmp_path / "ssh_config"
    ssh_config.write_text(
        f"Host *\n    IdentityFile {tmp_path / 'not-a-key'}\n"
        f"    IdentityFile {sshd_server.client_key}\n"
    )
    config = write_config(
        repo,
        sshd_server,
        remote_root,
        remote={"identity_file": None, "ssh_config": str(ssh_config)},
    )
    for command in ("sync", "verify"):
        code, terminal = on_terminal([*opswatch_command(), "--config", str(config), command], "")
        assert code == 0, terminal
        assert not MACHINE_LOG.search(terminal), terminal
        assert f"warning: identity_unusable path={tmp_path / 'not-a-key'}" in terminal
        assert "Traceback" not in terminal

    as_json = opswatch(config, "--log-format", "json", "sync")
    assert as_json.returncode == 0
    assert '"event": "identity_unusable"' in as_json.stderr


def test_file_names_with_control_characters_are_shown_escaped(
    sshd_server: LocalSshd,
    repo: Path,
    remote_root: Path,
    write_config: WriteConfig,
) -> None:
    hostile = repo / "docs/ops/runbooks" / "evil\x1b]0;pwned\x07\x1b[2J.md"
    hostile.write_text("# a name that would retitle and clear a terminal\n")
    config = write_config(repo, sshd_server, remote_root)
    code, terminal = on_terminal(
        [*opswatch_command(), "--config", str(config), "sync", "--dry-run"], ""
    )
    assert code == 0, terminal
    assert "\x1b" not in terminal and "\x07" not in terminal
    assert escaped(hostile.name) in terminal
    assert "evil\\x1b]0;pwned\\x07\\x1b[2J.md" in terminal


def test_a_config_that_fails_to_parse_is_what_status_reports(repo: Path) -> None:
    config = repo / "opswatch.toml"
    config.write_text('[remote\nhost = "droplet"\n')
    done = subprocess.run(
        [*opswatch_command(), "status"],
        cwd=repo / "docs/ops",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"error: {config}: not valid TOML")
    assert "not running" not in done.stderr

    config.write_text('[remote]\nhost = "droplet"\nroot = "~/x"\n[[rule]]\nfrom = "a"\nto = "b"\n')
    fine = subprocess.run(
        [*opswatch_command(), "status"], cwd=repo, capture_output=True, text=True, timeout=60
    )
    assert fine.returncode == 3 and "not running" in fine.stderr


def test_the_readme_install_steps_trust_the_host_before_the_first_sync() -> None:
    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    trust, sync = readme.find("opswatch trust"), readme.find("opswatch sync")
    assert 0 <= trust < sync, "the first steps must show `opswatch trust` before syncing"
