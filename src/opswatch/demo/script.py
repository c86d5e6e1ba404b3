"""``opswatch demo --script``: edits a user makes, each timed until it landed, then the checks.

Every wait is bounded; a step that does not land in time fails and the next one still runs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from opswatch.core.rules import Router
from opswatch.demo.site import DemoSite, routed_pairs, same_file, wait_for

EDIT_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class Step:
    name: str
    ok: bool
    seconds: float | None = None  # from the local edit until the server copy matched
    note: str = ""


Report = Callable[[Step], None]


class Script:
    def __init__(self, site: DemoSite, report: Report) -> None:
        self.site = site
        self.report = report
        self.steps: list[Step] = []

    def local(self, relative: str) -> Path:
        return self.site.repo / relative

    def remote(self, relative: str) -> Path:
        return self.site.remote_root / relative

    def record(self, step: Step) -> None:
        self.steps.append(step)
        self.report(step)

    def lands(self, name: str, local: str, remote: str, note: str = "") -> bool:
        took = wait_for(
            lambda: same_file(self.local(local), self.remote(remote)), EDIT_TIMEOUT_S, self.site
        )
        if took is None:
            note = f"{remote} did not match within {EDIT_TIMEOUT_S:.0f} s"
        self.record(Step(name, took is not None, took, note))
        return took is not None

    # -- the edits -------------------------------------------------------------------------

    def edit_dockerfile(self) -> None:
        path = "docs/ops/Dockerfile.demo-gateway"
        with open(self.local(path), "a") as handle:
            handle.write('LABEL org.opencontainers.image.description="edited by opswatch demo"\n')
        self.lands("edit a Dockerfile", path, path)

    def add_runbook(self) -> None:
        path = "docs/ops/runbooks/rollback.md"
        self.local(path).write_text("# Rollback\n\n1. git revert the ops change.\n2. Save.\n")
        self.lands("add a runbook", path, path)

    def make_executable(self) -> None:
        path = "docs/ops/quality_gates/smoke.sh"
        self.local(path).chmod(0o755)
        self.lands("chmod +x a script", path, path, "the server copy is executable too")

    def rename(self) -> None:
        old, new = "docs/ops/runbooks/deploy.md", "docs/ops/runbooks/deploy-production.md"
        os.rename(self.local(old), self.local(new))
        self.lands("rename a runbook", new, new, "the old name stays there: sync.delete is off")

    def edit_env(self) -> None:
        """Edit .env, then the compose file: once the second landed, the first was handled."""
        with open(self.local("docs/ops/.env"), "a") as handle:
            handle.write("DB_PASSWORD=stays-here\n")
        compose = "docs/ops/docker-compose.production.yml"
        with open(self.local(compose), "a") as handle:
            handle.write("# edited by opswatch demo\n")
        took = wait_for(
            lambda: same_file(
                self.local(compose), self.remote("ops/docker-compose.production.yml")
            ),
            EDIT_TIMEOUT_S,
            self.site,
        )
        leaked = self.secrets_on_server()
        ok = took is not None and not leaked
        if took is None:
            note = f"the compose edit did not land within {EDIT_TIMEOUT_S:.0f} s"
        elif leaked:
            note = f"on the server: {', '.join(leaked)}"
        else:
            note = "stayed here; the compose file edited after it landed"
        self.record(Step("edit .env (and the compose file)", ok, took, note))

    # -- the checks ------------------------------------------------------------------------

    def secrets_on_server(self) -> list[str]:
        """Server paths the built-in ``never`` list refuses: there must be none."""
        never = Router((), "/")
        found = []
        for current, _dirs, names in os.walk(self.site.remote_root):
            for name in names:
                relative = (Path(current) / name).relative_to(self.site.remote_root).as_posix()
                if never.never_reason(relative):
                    found.append(relative)
        return sorted(found)

    def check_all_match(self) -> None:
        pairs = routed_pairs(self.site)
        differ = [str(a.relative_to(self.site.repo)) for a, b in pairs if not same_file(a, b)]
        note = f"differ: {', '.join(differ)}" if differ else f"{len(pairs)} files, mode included"
        self.record(Step("server copy matches byte for byte", not differ, None, note))

    def check_secrets(self) -> None:
        leaked = self.secrets_on_server()
        note = f"on the server: {', '.join(leaked)}" if leaked else ".env, data/, certs/"
        self.record(Step("secrets stayed home", not leaked, None, note))

    def check_verify(self) -> None:
        done = self.site.opswatch("verify")
        lines = (done.stdout.strip() or done.stderr.strip()).splitlines()
        self.record(Step("opswatch verify", done.returncode == 0, None, lines[-1] if lines else ""))

    def check_status(self) -> None:
        done = self.site.opswatch("status", "--json")
        try:
            status = json.loads(done.stdout)
        except ValueError:
            status = {}
        ok = done.returncode == 0 and status.get("state") == "watching"
        note = (
            f"{status.get('state')}, {status.get('uploaded')} uploaded since start"
            if status
            else (done.stderr.strip() or f"exit {done.returncode}")
        )
        self.record(Step("opswatch status", ok, None, note))

    def run(self) -> list[Step]:
        for action in (
            self.edit_dockerfile,
            self.add_runbook,
            self.make_executable,
            self.rename,
            self.edit_env,
            self.check_all_match,
            self.check_secrets,
            self.check_verify,
            self.check_status,
        ):
            action()
        return self.steps
