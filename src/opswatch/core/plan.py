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
    first_sync: bool = True,
) -> Plan:
    """Actions that make the remote copy of each path match the local one.

    ``local[path]`` is None for a file that is gone; ``remote`` holds what a stat of each
    target found (None: missing); a target absent from ``remote`` was not looked at.
    ``first_sync``: no manifest ever existed, so a server file with no record is overwritten
    (as the manual procedure did); after that, such a file is an unrecorded conflict.
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
            skipped.append(Skip(path, decision.reason, refusal=decision.refusal))
        elif found is None:
            gone = _plan_gone(path, by_local.get(path, []), remote, delete=delete, force=force)
            for gone_step in gone:
                _add(gone_step, actions, skipped, conflicts)
        elif decision.verdict is Verdict.ROUTED:
            for target in decision.targets:
                pushed = manifest.get(target)
                step = _plan_target(path, target, found, pushed, remote, force, first_sync)
                if step is not None:
                    _add(step, actions, skipped, conflicts)
    return Plan(tuple(actions), tuple(skipped), tuple(conflicts))


def _add(
    step: Upload | Remove | Conflict | Skip,
    actions: list[Upload | Remove],
    skipped: list[Skip],
    conflicts: list[Conflict],
) -> None:
    if isinstance(step, Conflict):
        conflicts.append(step)
    elif isinstance(step, Skip):
        skipped.append(step)
    else:
        actions.append(step)


def _plan_gone(
    path: str,
    pushed: list[Pushed],
    remote: Mapping[str, RemoteFile | None],
    *,
    delete: bool,
    force: bool,
) -> list[Remove | Conflict | Skip]:
    """A delete is a change like any other: a server copy changed since opswatch pushed it
    is a conflict, not removed (``--force`` removes it, after saving it)."""
    steps: list[Remove | Conflict | Skip] = []
    for entry in pushed:
        if not delete:
            steps.append(Skip(path, "deleted locally; sync.delete is off", entry.remote))
            continue
        there = remote.get(entry.remote)
        if entry.remote not in remote:
            steps.append(
                Skip(path, "deleted locally; the server copy was not checked", entry.remote)
            )
        elif there is not None and not entry.matches_remote(there) and not force:
            steps.append(Conflict(path, entry.remote))
        else:
            steps.append(Remove(path, entry.remote))
    return steps


def _plan_target(
    path: str,
    target: str,
    found: LocalFile,
    pushed: Pushed | None,
    remote: Mapping[str, RemoteFile | None],
    force: bool,
    first_sync: bool,
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
    if there is not None and not first_sync and not force:
        # No record, yet a manifest existed before: it was lost. The server copy may hold an
        # edit made there; the syncer hashes both sides (equal: adopted) before calling it one.
        return Conflict(path, target, unrecorded=True)
    # No record of it on the first sync: overwrite, as the first sync by hand did. Even a copy
    # with the same size and the same whole second may differ (SFTP mtimes have no fraction),
    # and after this upload the manifest knows it, so later passes skip it without a hash.
    return Upload(path, target, found, force)
