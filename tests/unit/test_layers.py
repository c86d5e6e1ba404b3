"""The import-linter contracts in pyproject.toml hold, and an arrow pointing up breaks them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT = Path(sys.executable).parent / "lint-imports"


def lint(root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(root / "src")}
    return subprocess.run(
        [str(LINT), "--no-cache", "--config", str(root / "pyproject.toml")],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    """The package and its contracts, somewhere the test may break them."""
    shutil.copytree(ROOT / "src", tmp_path / "src", ignore=shutil.ignore_patterns("*.egg-info"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_contracts_hold(copy: Path) -> None:
    done = lint(copy)
    assert done.returncode == 0, done.stdout + done.stderr
    assert " kept, 0 broken." in done.stdout, done.stdout


@pytest.mark.parametrize(
    ("module", "wrong_import", "contract"),
    [
        ("core/rules.py", "import opswatch.ssh.remote", "Layers"),
        ("rebuild/worker.py", "import opswatch.daemon.engine", "Layers"),
        ("sync/syncer.py", "import click", "Only cli/ imports click"),
        ("local/scan.py", "import paramiko", "Only ssh/ imports paramiko"),
        ("core/plan.py", "import time", "core/ is pure"),
    ],
)
def test_an_arrow_pointing_up_breaks_a_contract(
    copy: Path, module: str, wrong_import: str, contract: str
) -> None:
    path = copy / "src/opswatch" / module
    text = path.read_text()
    marker = "from __future__ import annotations\n"
    path.write_text(text.replace(marker, f"{marker}\n{wrong_import}  # noqa\n", 1))
    done = lint(copy)
    assert done.returncode != 0, done.stdout
    broken = done.stdout[done.stdout.index("Broken contracts") :]
    assert contract in broken, done.stdout
