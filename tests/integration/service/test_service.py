"""`opswatch service install|uninstall`: the rendered systemd unit and launchd plist, checked key by
key (and by `systemd-analyze verify` where it exists), written to and removed from a scratch home.
"""

from __future__ import annotations

import os
import plistlib
import shlex
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from daemon_process import opswatch, opswatch_command
from opswatch.config import parse_config
from opswatch.demo.sshd import LocalSshd
from opswatch.service.units import render_launchd, render_systemd

ROOT = Path(__file__).resolve().parents[3]


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """systemd's INI dialect: sections of keys, a key may repeat; comments and blanks skipped."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"key outside a section: {line!r}"
        key, sep, value = line.partition("=")
        assert sep, f"not a key=value line: {line!r}"
        current.setdefault(key, []).append(value)
    return sections


def check_systemd_unit(text: str, program: list[str], config: Path) -> None:
    unit = parse_unit(text)
    assert set(unit) == {"Unit", "Service", "Install"}
    service = {key: values[-1] for key, values in unit["Service"].items()}
    assert service["Type"] == "notify"
    assert service["NotifyAccess"] == "main"
    assert service["Restart"] == "on-failure"
    assert 1 <= int(service["RestartSec"]) <= 60
    assert int(unit["Unit"]["StartLimitIntervalSec"][0]) > 0
    assert int(unit["Unit"]["StartLimitBurst"][0]) > 0
    assert "PYTHONUNBUFFERED=1" in unit["Service"]["Environment"]
    assert shlex.split(service["ExecStart"]) == [
        *program,
        "--config",
        str(config),
        "--log-format",
        "json",
        "run",
    ]
    assert Path(program[0]).is_absolute()
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"  # the daemon reloads on SIGHUP
    assert service["WorkingDirectory"] == str(config.parent)
    assert service["NoNewPrivileges"] == "yes"
    # hardening that would hide the agent socket, keys or known_hosts from ssh is left out
    for key in ("PrivateTmp", "ProtectHome", "ProtectSystem", "PrivateNetwork", "DynamicUser"):
        assert key not in service
    assert "AF_INET" in service["RestrictAddressFamilies"].split()
    assert "AF_UNIX" in service["RestrictAddressFamilies"].split()
    assert unit["Install"]["WantedBy"] == ["default.target"]


def check_launchd_plist(data: bytes, program: list[str], config: Path, label: str) -> None:
    plist = plistlib.loads(data)
    assert plist["Label"] == label
    assert plist["ProgramArguments"] == [
        *program,
        "--config",
        str(config),
        "--log-format",
        "json",
        "run",
    ]
    assert plist["RunAtLoad"] is True
    assert plist["KeepAlive"] == {"SuccessfulExit": False}  # restart after a failure only
    assert plist["ThrottleInterval"] >= 1
    assert Path(plist["StandardOutPath"]).is_absolute()
    assert plist["StandardErrorPath"] == plist["StandardOutPath"]
    assert plist["EnvironmentVariables"]["PYTHONUNBUFFERED"] == "1"
    assert plist["WorkingDirectory"] == str(config.parent)
    for key in ("OnDemand", "Program", "inetdCompatibility"):
        assert key not in plist


@pytest.fixture
def config(repo: Path, sshd_server: LocalSshd, remote_root: Path, write_config) -> Path:
    return write_config(repo, sshd_server, remote_root)


@pytest.fixture
def scratch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    # no systemctl or launchctl: the test must not touch this machine's service managers
    monkeypatch.setenv("PATH", str(Path(opswatch_command()[0]).parent))
    return home


def test_systemd_unit_renders_with_the_installed_opswatch_and_the_config(config: Path) -> None:
    done = opswatch(config, "service", "install", "--dry-run", "--platform", "systemd")
    assert done.returncode == 0, done.stderr
    check_systemd_unit(done.stdout, opswatch_command(), config)
    assert "would write " in done.stderr and "opswatch.service" in done.stderr
    assert "would run: systemctl --user enable --now opswatch.service" in done.stderr


def test_systemd_analyze_accepts_the_rendered_unit(config: Path, tmp_path: Path) -> None:
    done = opswatch(config, "service", "install", "--dry-run", "--platform", "systemd")
    assert done.returncode == 0, done.stderr
    unit = tmp_path / "opswatch.service"
    unit.write_text(done.stdout)
    check_systemd_unit(unit.read_text(), opswatch_command(), config)
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        return  # the key-by-key check above is the whole check here
    verified = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, check=False
    )
    assert verified.returncode == 0, verified.stderr
    complaints = [line for line in verified.stderr.splitlines() if str(unit) in line]
    assert complaints == []


def test_launchd_plist_renders_and_parses(config: Path) -> None:
    done = opswatch(config, "service", "install", "--dry-run", "--platform", "launchd")
    assert done.returncode == 0, done.stderr
    check_launchd_plist(done.stdout.encode(), opswatch_command(), config, "com.opswatch.agent")
    assert "would run: launchctl bootstrap gui/" in done.stderr


def test_install_writes_the_unit_and_uninstall_removes_it(config: Path, scratch_home: Path) -> None:
    unit = scratch_home / ".config" / "systemd" / "user" / "opswatch-work.service"
    done = opswatch(
        config, "service", "install", "--no-enable", "--platform", "systemd", "--name", "work"
    )
    assert done.returncode == 0, done.stderr
    assert f"wrote {unit}" in done.stdout
    assert "systemctl --user enable --now opswatch-work.service" in done.stdout
    check_systemd_unit(unit.read_text(), opswatch_command(), config)
    assert stat_mode(unit) & 0o022 == 0

    done = opswatch(config, "service", "uninstall", "--platform", "systemd", "--name", "work")
    assert done.returncode == 0, done.stderr
    assert not unit.exists()


def test_install_launchd_agent_in_a_scratch_home(config: Path, scratch_home: Path) -> None:
    plist = scratch_home / "Library" / "LaunchAgents" / "com.opswatch.agent.plist"
    done = opswatch(config, "service", "install", "--no-enable", "--platform", "launchd")
    assert done.returncode == 0, done.stderr
    check_launchd_plist(plist.read_bytes(), opswatch_command(), config, "com.opswatch.agent")
    log = Path(plistlib.loads(plist.read_bytes())["StandardOutPath"])
    assert log.parent.is_dir()  # launchd creates the log file, not its folder
    assert opswatch(config, "service", "uninstall", "--platform", "launchd").returncode == 0
    assert not plist.exists()


def test_install_refuses_a_bad_config(tmp_path: Path) -> None:
    bad = tmp_path / "opswatch.toml"
    bad.write_text("[remote]\nhost = 1\n")
    done = opswatch(bad, "service", "install", "--dry-run")
    assert done.returncode == 2
    assert done.stderr.startswith("error: ")


def stat_mode(path: Path) -> int:
    return os.stat(path).st_mode & 0o777


# -- the examples shipped at the repository root --------------------------------------------------

EXAMPLE_CONFIG = {
    "remote": {"host": "droplet", "root": "/root/portfolio"},
    "rule": [{"from": "docs/ops", "to": "ops"}],
}


def example_systemd() -> str:
    config = parse_config(EXAMPLE_CONFIG, Path("/home/you/src/portfolio/opswatch.toml"))
    return render_systemd(["/home/you/.local/bin/opswatch"], config, "opswatch.service")


def example_launchd() -> str:
    config = parse_config(EXAMPLE_CONFIG, Path("/Users/you/src/portfolio/opswatch.toml"))
    log = Path("/Users/you/Library/Logs/opswatch/opswatch.log")
    return render_launchd(["/Users/you/.local/bin/opswatch"], config, "com.opswatch.agent", log)


def test_shipped_examples_are_what_install_renders() -> None:
    systemd = (ROOT / "systemd" / "opswatch.service").read_text()
    launchd = (ROOT / "launchd" / "com.opswatch.agent.plist").read_text()
    assert systemd == example_systemd(), "re-render systemd/opswatch.service (see this test)"
    assert launchd == example_launchd(), "re-render launchd/com.opswatch.agent.plist"
    check_systemd_unit(
        systemd, ["/home/you/.local/bin/opswatch"], Path("/home/you/src/portfolio/opswatch.toml")
    )
    check_launchd_plist(
        launchd.encode(),
        ["/Users/you/.local/bin/opswatch"],
        Path("/Users/you/src/portfolio/opswatch.toml"),
        "com.opswatch.agent",
    )


def test_install_without_a_user_bus_says_what_to_do_and_writes_nothing(
    config: Path, scratch_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A container or an SSH login without lingering: no bus for `systemctl --user`."""
    runtime = scratch_home / "run-user"
    runtime.mkdir()
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))  # exists, but holds no bus
    monkeypatch.delenv("DBUS_SESSION_BUS_ADDRESS", raising=False)
    unit = scratch_home / ".config" / "systemd" / "user" / "opswatch.service"

    done = opswatch(config, "service", "install", "--platform", "systemd")
    assert done.returncode == 1
    assert done.stderr.startswith("error: no systemd user manager is reachable")
    assert len(done.stderr.strip().splitlines()) == 1
    assert "loginctl enable-linger" in done.stderr and "opswatch run" in done.stderr
    assert not unit.exists() and not unit.parent.exists()

    dry = opswatch(config, "service", "install", "--dry-run", "--platform", "systemd")
    assert dry.returncode == 0
    assert "loginctl enable-linger" in dry.stderr and "opswatch run" in dry.stderr

    monkeypatch.delenv("XDG_RUNTIME_DIR")
    unset = opswatch(config, "service", "install", "--platform", "systemd")
    assert unset.returncode == 1 and "XDG_RUNTIME_DIR is not set" in unset.stderr
    assert not unit.exists()


def test_install_with_a_user_bus_enables_the_unit(
    config: Path, scratch_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = scratch_home / "run-user"
    runtime.mkdir()
    with socket.socket(socket.AF_UNIX) as bus:
        bus.bind(str(runtime / "bus"))
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
        monkeypatch.delenv("DBUS_SESSION_BUS_ADDRESS", raising=False)
        fake = scratch_home / "bin"
        fake.mkdir()
        calls = scratch_home / "systemctl.calls"
        (fake / "systemctl").write_text(f"#!/bin/sh\necho \"$*\" >> '{calls}'\n")
        (fake / "systemctl").chmod(0o755)
        monkeypatch.setenv("PATH", f"{fake}:{os.environ['PATH']}")
        done = opswatch(config, "service", "install", "--platform", "systemd")
    assert done.returncode == 0, done.stderr
    assert "--user enable --now opswatch.service" in calls.read_text()
    assert (scratch_home / ".config" / "systemd" / "user" / "opswatch.service").is_file()
