"""invoke stays unloaded in the daemon until an ssh_config ``Match exec`` line needs it.

Each check runs in a fresh interpreter: the test process itself has imported paramiko long ago.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path


def run_python(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_the_daemon_imports_do_not_load_invoke() -> None:
    out = run_python(
        """
        import sys
        from opswatch.ssh._compat import defer_rarely_used
        defer_rarely_used()
        import opswatch.daemon.run
        invoke = type(sys.modules["invoke"]).__name__
        print(invoke, "yaml" in sys.modules, "unittest" in sys.modules)
        """
    )
    assert out == "_StandIn False False"


def test_a_match_exec_line_still_runs_its_command(tmp_path: Path) -> None:
    ssh_config = tmp_path / "ssh_config"
    ssh_config.write_text('Match exec "true"\n    Port 2222\n    User deploy\n')
    out = run_python(
        f"""
        import sys
        from opswatch.ssh._compat import defer_rarely_used
        defer_rarely_used()
        from pathlib import Path
        from opswatch.config import RemoteConfig
        from opswatch.ssh.endpoint import resolve_endpoint
        remote = RemoteConfig(host="example.org", root="/srv", ssh_config=Path({str(ssh_config)!r}))
        endpoint = resolve_endpoint(remote)
        print(endpoint.port, endpoint.user, type(sys.modules["invoke"]).__name__)
        """
    )
    assert out == "2222 deploy module"
