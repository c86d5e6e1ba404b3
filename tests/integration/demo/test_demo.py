"""`opswatch demo`: the whole loop against its own throwaway sshd, scripted and interactive."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from daemon_process import opswatch_command
from helpers import wait_until
from opswatch.cli.main import cli
from opswatch.demo.sshd import LocalSshd

pytestmark = pytest.mark.sshd  # it starts its own sshd; without one it must say how to get it

STEPS = (
    "edit a Dockerfile",
    "add a runbook",
    "chmod +x a script",
    "rename a runbook",
    "edit .env (and the compose file)",
    "server copy matches byte for byte",
    "secrets stayed home",
    "opswatch verify",
    "opswatch status",
)


@pytest.fixture(autouse=True)
def _needs_sshd() -> None:
    if not LocalSshd.available():
        pytest.fail("OpenSSH's sshd is needed: run `bash tests/run.sh`", pytrace=False)


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A temp folder of the demo's own (short enough for its socket), so that demos run by
    other test sessions on the same machine do not show up in it."""
    folder = Path(tempfile.mkdtemp(prefix="owd-", dir="/tmp"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_the_scripted_demo_passes_and_cleans_up(short_tmp: Path) -> None:
    done = subprocess.run(
        [*opswatch_command(), "demo", "--script"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "TMPDIR": str(short_tmp)},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for step in STEPS:
        assert re.search(rf"^  ok   {re.escape(step)}", done.stdout, re.M), done.stdout
    assert re.search(r"edit a Dockerfile\s+landed in\s+\d+ ms", done.stdout)
    assert "all 9 checks passed" in done.stdout
    assert list(short_tmp.iterdir()) == [], "the demo folder is removed"


def test_the_interactive_demo_shows_what_lands_and_stops_on_ctrl_c() -> None:
    process = subprocess.Popen(
        [*opswatch_command(), "demo"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    lines: list[str] = []
    assert process.stdout is not None
    reader = threading.Thread(target=lambda: lines.extend(process.stdout or ()), daemon=True)
    reader.start()
    try:
        wait_until(lambda: any("What the daemon does" in line for line in lines), timeout=60)
        text = "".join(lines)
        repo = Path(re.search(r"^  repository\s+(/\S+)$", text, re.M)[1])  # type: ignore[index]
        server = Path(re.search(r"^  server copy\s+(/\S+)$", text, re.M)[1])  # type: ignore[index]
        assert "opswatch status" in text and "opswatch pause" in text
        dockerfile = repo / "docs/ops/Dockerfile.demo-gateway"
        dockerfile.write_text(dockerfile.read_text() + "# an edit\n")
        wait_until(
            lambda: any("↑ docs/ops/Dockerfile.demo-gateway" in line for line in lines), timeout=20
        )
        assert (server / "docs/ops/Dockerfile.demo-gateway").read_bytes() == dockerfile.read_bytes()
    finally:
        process.send_signal(signal.SIGINT)
        code = process.wait(timeout=30)
        reader.join(timeout=5)
        process.stdout.close()
    assert code == 0, "".join(lines)
    assert "stopped" in "".join(lines)
    assert not repo.parent.exists(), "the demo folder is removed"


def test_without_sshd_it_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(LocalSshd, "available", staticmethod(lambda: False))
    result = CliRunner().invoke(cli, ["demo", "--script"])
    assert result.exit_code == 1
    assert "apt-get install openssh-server" in result.output
