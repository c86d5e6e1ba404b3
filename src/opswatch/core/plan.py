"""Deciding what to do: local state, the manifest and the remote state in, actions out.

Pure. The same function serves a watched batch, a reconcile and ``opswatch sync``: what differs
is only which paths are looked at and what is known about them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from opswatch.core.rules import Router, Verdict
from opswatch.model import Conflict, LocalFile, Plan, Pushed, RemoteFile, Remove, Skip, Upload


def plan(
    paths: Iterable[str],
    router: Router,
    local: Mapping[str, LocalFile | Skip | None],
    manifest: Mapping[str, Pushed],
    remote: Mapping[str, RemoteFile | None],
    *,
    delete: bool,
    force: bool = False,
) -> Plan:
    """Actions that make the remote copy of each path match the local one.

    ``local[path]`` is None for a file that is gone; ``remote`` holds what a stat of each
    target found (None: missing); a target absent from ``remote`` was not looked at.
    """
    actions: list[Upload | Remove] = []
    skipped: list[Skip] = []
    conflicts: list[Conflict] = []
    by_local: dict[str, list[Pushed]] = {}  # only files gone locally need their records
    for entry in manifest.values():
        if local.get(entry.local) is None:
            by_local.setdefault(entry.local, []).append(entry)
    for path in dict.fromkeys(paths):
        found = local.get(path)
        decision = router.decide(path)
        if isinstance(found, Skip):
            skipped.append(found)
        elif decision.verdict is Verdict.REFUSED:
            skipped.append(Skip(path, decision.reason))
        elif found is None:
            _plan_gone(path, by_local.get(path, []), delete, actions, skipped)
        elif decision.verdict is Verdict.ROUTED:
            for target in decision.targets:
                step = _plan_target(path, target, found, manifest.get(target), remote, force)
                if isinstance(step, Upload):
                    actions.append(step)
                elif isinstance(step, Conflict):
                    conflicts.append(step)
                elif step is not None:
                    skipped.append(step)
    return Plan(tuple(actions), tuple(skipped), tuple(conflicts))


def _plan_gone(
    path: str,
    pushed: list[Pushed],
    delete: bool,
    actions: list[Upload | Remove],
    skipped: list[Skip],
) -> None:
    for entry in pushed:
        if delete:
            actions.append(Remove(path, entry.remote))
        else:
            skipped.append(Skip(path, "deleted locally; sync.delete is off", entry.remote))


def _plan_target(
    path: str,
    target: str,
    found: LocalFile,
    pushed: Pushed | None,
    remote: Mapping[str, RemoteFile | None],
    force: bool,
) -> Upload | Conflict | Skip | None:
    looked = target in remote
    there = remote.get(target)
    if looked and there is None:
        return Upload(path, target, found, force)
    if pushed is not None:
        changed_remotely = there is not None and not pushed.matches_remote(there)
        if changed_remotely and not force:
            return Conflict(path, target)
        if pushed.matches_local(found) and not changed_remotely:
            return None  # unchanged since we pushed it
        return Upload(path, target, found, force)
    # No record of it: overwrite, as the first sync by hand did. Even a copy with the same size
    # and the same whole second may differ (SFTP mtimes have no fraction), and after this upload
    # the manifest knows it, so later passes skip it without a transfer or a hash.
    return Upload(path, target, found, force)
