"""The planner: local state × manifest × remote state → actions. Table-driven, no I/O."""

from __future__ import annotations

import pytest

from opswatch.config import Rule
from opswatch.core.plan import plan
from opswatch.core.rules import Router
from opswatch.model import Conflict, LocalFile, Pushed, RemoteFile, Remove, Skip, Upload

ROOT = "/srv"
ROUTER = Router((Rule("docs/ops", None, ("ops",)),), ROOT)
PATH = "docs/ops/Dockerfile.a"
TARGET = "/srv/ops/Dockerfile.a"
SECOND = 1_000_000_000
LOCAL = LocalFile(size=10, mtime_ns=1700 * SECOND + 5, mode=0o644)
PUSHED = Pushed(TARGET, PATH, "ab" * 32, 10, 1700 * SECOND + 5, 0o644, 0.0)
SAME_REMOTE = RemoteFile(size=10, mtime_s=1700, mode=0o100644)
EDITED_LOCAL = LocalFile(size=10, mtime_ns=1700 * SECOND + 900, mode=0o644)  # same second!
HOTFIXED_REMOTE = RemoteFile(size=12, mtime_s=1800, mode=0o100644)

NOT_LOOKED = object()


@pytest.mark.parametrize(
    ("local", "pushed", "remote", "delete", "force", "expected"),
    [
        # new file, nothing remote
        (LOCAL, None, None, False, False, Upload(PATH, TARGET, LOCAL)),
        # unchanged since we pushed it: nothing to do, no hashing
        (LOCAL, PUSHED, SAME_REMOTE, False, False, None),
        # edited within the same second, same size: rsync's blind spot, not ours
        (EDITED_LOCAL, PUSHED, SAME_REMOTE, False, False, Upload(PATH, TARGET, EDITED_LOCAL)),
        # chmod +x: mode counts
        (
            LocalFile(10, LOCAL.mtime_ns, 0o755),
            PUSHED,
            SAME_REMOTE,
            False,
            False,
            Upload(PATH, TARGET, LocalFile(10, LOCAL.mtime_ns, 0o755)),
        ),
        # someone hot-fixed the server copy: a conflict, not an overwrite
        (EDITED_LOCAL, PUSHED, HOTFIXED_REMOTE, False, False, Conflict(PATH, TARGET)),
        # ... unless forced
        (
            EDITED_LOCAL,
            PUSHED,
            HOTFIXED_REMOTE,
            False,
            True,
            Upload(PATH, TARGET, EDITED_LOCAL, True),
        ),
        # deleted on the server: put it back
        (LOCAL, PUSHED, None, False, False, Upload(PATH, TARGET, LOCAL)),
        # never pushed, the server has an identical-looking copy: overwrite, then it is known
        (LOCAL, None, SAME_REMOTE, False, False, Upload(PATH, TARGET, LOCAL)),
        # never pushed, server copy differs: overwrite (first sync, as scp did)
        (LOCAL, None, HOTFIXED_REMOTE, False, False, Upload(PATH, TARGET, LOCAL)),
        # deleted locally, delete off: reported, kept
        (
            None,
            PUSHED,
            SAME_REMOTE,
            False,
            False,
            Skip(PATH, "deleted locally; sync.delete is off", TARGET),
        ),
        # deleted locally, delete on: removed
        (None, PUSHED, SAME_REMOTE, True, False, Remove(PATH, TARGET)),
        # deleted locally but never pushed by us: never removed, whatever the setting
        (None, None, SAME_REMOTE, True, False, None),
        # the remote side was not looked at (a watched batch without stat): trust the manifest
        (LOCAL, PUSHED, NOT_LOOKED, False, False, None),
    ],
)
def test_plan_table(
    local: LocalFile | None,
    pushed: Pushed | None,
    remote: RemoteFile | object | None,
    delete: bool,
    force: bool,
    expected: object,
) -> None:
    manifest = {TARGET: pushed} if pushed else {}
    remote_index = {} if remote is NOT_LOOKED else {TARGET: remote}
    result = plan([PATH], ROUTER, {PATH: local}, manifest, remote_index, delete=delete, force=force)  # type: ignore[dict-item]
    everything = [*result.actions, *result.conflicts, *result.skipped]
    assert everything == ([expected] if expected else [])


def test_secrets_are_refused_even_if_the_manifest_knows_them() -> None:
    pushed = Pushed("/srv/ops/.env", "docs/ops/.env", "0" * 64, 1, 0, 0o600, 0.0)
    local = {"docs/ops/.env": LocalFile(1, 0, 0o600)}
    result = plan(["docs/ops/.env"], ROUTER, local, {pushed.remote: pushed}, {}, delete=True)
    assert result.actions == ()
    assert result.skipped[0].reason.startswith("never")


def test_fan_out_plans_every_target() -> None:
    router = Router((Rule("docs/ops", None, ("a", "b")),), ROOT)
    result = plan(
        [PATH],
        router,
        {PATH: LOCAL},
        {},
        {"/srv/a/Dockerfile.a": None, "/srv/b/Dockerfile.a": None},
        delete=False,
    )
    assert [a.remote for a in result.actions] == ["/srv/a/Dockerfile.a", "/srv/b/Dockerfile.a"]
