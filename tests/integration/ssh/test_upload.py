"""Pipelined uploads against a real sshd: content, mode, mtime, failures, refusals, drops."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from paramiko.sftp import CMD_CLOSE, CMD_OPEN

from helpers import wait_until
from opswatch.demo.sshd import LocalSshd
from opswatch.errors import ConnectError, RemoteFileError
from opswatch.ssh import traits
from opswatch.ssh.endpoint import Endpoint
from opswatch.ssh.remote import SshRemote
from opswatch.ssh.transfer import CHUNK, UploadJob, UploadOutcome, is_temp_name
from opswatch.ssh.wire import Arg, OnReply, Wire

KEY_BLOCK = b"-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n"


def connect(server: LocalSshd) -> SshRemote:
    endpoint = Endpoint(
        alias=server.alias,
        hostname=server.host,
        port=server.port,
        user=server.user,
        identity_files=(server.client_key,),
        known_hosts=server.known_hosts,
        identities_only=True,
    )
    remote = SshRemote(endpoint)
    remote.connect()
    return remote


@pytest.fixture
def remote(sshd_server: LocalSshd) -> Iterator[SshRemote]:
    connected = connect(sshd_server)
    yield connected
    connected.close()


def job(local: Path, content: bytes, target: Path, mode: int = 0o644) -> UploadJob:
    local.parent.mkdir(parents=True, exist_ok=True)
    local.write_bytes(content)
    os.chmod(local, mode)
    info = local.stat()
    return UploadJob(local, str(target), mode, info.st_mtime_ns)


def temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if is_temp_name(p.name)]


def assert_landed(job: UploadJob, outcome: UploadOutcome) -> None:
    content = job.source.read_bytes()
    target = Path(job.remote)
    assert outcome.ok, outcome
    assert target.read_bytes() == content
    info = target.stat()
    assert info.st_mode & 0o7777 == job.mode
    assert int(info.st_mtime) == job.mtime_ns // 1_000_000_000
    assert outcome.sha256 == hashlib.sha256(content).hexdigest()
    assert outcome.size == len(content)


def test_500_small_files_land_whole_with_mode_and_mtime(
    remote: SshRemote, tmp_path: Path, remote_root: Path
) -> None:
    jobs = []
    for i in range(500):
        folder = f"d{i % 7}/sub{i % 3}"  # folders that do not exist yet, nested
        content = f"file {i}\n".encode() * (200 + i % 50)
        mode = 0o755 if i % 10 == 0 else 0o640
        jobs.append(
            job(
                tmp_path / "src" / folder / f"f{i}.txt",
                content,
                remote_root / folder / f"f{i}.txt",
                mode,
            )
        )
    outcomes = remote.upload_many(jobs)
    assert [o.job for o in outcomes] == jobs
    for upload, outcome in zip(jobs, outcomes, strict=True):
        assert_landed(upload, outcome)
    assert temp_files(remote_root) == []
    # A second pass over the same folders: known folders, targets replaced in place.
    again = [job(j.source, b"second\n", Path(j.remote), j.mode) for j in jobs[:50]]
    for upload, outcome in zip(again, remote.upload_many(again), strict=True):
        assert_landed(upload, outcome)


def test_a_20_mib_file_and_an_empty_one(
    remote: SshRemote, tmp_path: Path, remote_root: Path
) -> None:
    big = os.urandom(20 * 1024 * 1024 + 123)
    jobs = [
        job(tmp_path / "big.bin", big, remote_root / "big.bin"),
        job(tmp_path / "empty", b"", remote_root / "empty"),
        job(tmp_path / "exact", b"x" * CHUNK, remote_root / "exact"),
    ]
    for upload, outcome in zip(jobs, remote.upload_many(jobs), strict=True):
        assert_landed(upload, outcome)
    assert temp_files(remote_root) == []


def test_failing_files_do_not_stop_the_others(
    remote: SshRemote, tmp_path: Path, remote_root: Path
) -> None:
    (remote_root / "blocker").write_text("a file where a folder should be\n")
    (remote_root / "a-folder").mkdir()  # a target that is a folder: the rename fails
    (remote_root / "a-folder" / "inside").write_text("keep\n")
    jobs = [
        job(tmp_path / f"ok{i}", f"ok {i}\n".encode(), remote_root / f"ok{i}") for i in range(20)
    ]
    under_file = job(tmp_path / "x", b"x\n", remote_root / "blocker" / "deeper" / "x")
    onto_folder = job(tmp_path / "y", b"y\n", remote_root / "a-folder")
    vanished = UploadJob(tmp_path / "never-written", str(remote_root / "gone"), 0o644, 0)
    mixed = [*jobs[:10], under_file, onto_folder, vanished, *jobs[10:]]
    outcomes = remote.upload_many(mixed)
    by_target = {o.job.remote: o for o in outcomes}
    for upload in jobs:
        assert_landed(upload, by_target[upload.remote])
    for bad, reason in ((under_file, "not a folder"), (onto_folder, ""), (vanished, "vanished")):
        error = by_target[bad.remote].error
        assert isinstance(error, RemoteFileError)
        assert reason in error.reason
    assert (remote_root / "blocker").read_text() == "a file where a folder should be\n"
    assert (remote_root / "a-folder" / "inside").read_text() == "keep\n"
    assert not (remote_root / "gone").exists()
    assert temp_files(remote_root) == []
    assert remote.connected


def test_private_keys_are_refused_and_nothing_of_them_lands(
    remote: SshRemote, tmp_path: Path, remote_root: Path
) -> None:
    small = job(tmp_path / "deploy_key", b"note\n" + KEY_BLOCK, remote_root / "deploy_key")
    # The key block sits in a later chunk: earlier chunks were already written to the temp.
    late = job(tmp_path / "bundle", b"a" * (3 * CHUNK) + KEY_BLOCK, remote_root / "bundle")
    fine = job(tmp_path / "fine", b"fine\n", remote_root / "fine")
    outcomes = remote.upload_many([small, late, fine])
    assert [o.refused is not None for o in outcomes] == [True, True, False]
    assert not (remote_root / "deploy_key").exists()
    assert not (remote_root / "bundle").exists()
    assert_landed(fine, outcomes[2])
    assert temp_files(remote_root) == []


def test_a_dropped_connection_raises_and_leaves_no_partial_target(
    own_sshd: LocalSshd, tmp_path: Path, remote_root: Path
) -> None:
    remote = connect(own_sshd)
    content = os.urandom(512 * 1024)
    jobs = [job(tmp_path / f"f{i}", content, remote_root / f"f{i}") for i in range(160)]
    raised: list[BaseException] = []

    def upload() -> None:
        try:
            remote.upload_many(jobs)
        except BaseException as exc:
            raised.append(exc)

    worker = threading.Thread(target=upload)
    worker.start()
    wait_until(lambda: any(Path(j.remote).exists() for j in jobs), message="a first file")
    own_sshd.drop_sessions()
    worker.join(timeout=60)
    assert not worker.is_alive()
    assert len(raised) == 1 and isinstance(raised[0], ConnectError), raised
    assert not remote.connected
    landed = [Path(j.remote) for j in jobs if Path(j.remote).exists()]
    assert 0 < len(landed) < len(jobs)
    for target in landed:
        assert target.read_bytes() == content


def test_stat_many_in_one_go(remote: SshRemote, remote_root: Path) -> None:
    (remote_root / "here").write_bytes(b"12345")
    os.utime(remote_root / "here", (1_700_000_000, 1_700_000_000))
    paths = [str(remote_root / "here"), str(remote_root / "missing"), str(remote_root / "no/such")]
    found = remote.stat_many(paths)
    here = found[paths[0]]
    assert here is not None and (here.size, here.mtime_s) == (5, 1_700_000_000)
    assert found[paths[1]] is None and found[paths[2]] is None


# -- a whole batch in flight -------------------------------------------------------------------


def mixed_batch(tmp_path: Path, remote_root: Path) -> tuple[list[UploadJob], list[UploadJob]]:
    """500 files that must land, and amid them one of each failure a file can meet: a rename
    onto a folder (small and big: the rename goes with the close, or after it), a folder that
    cannot be made, a local file gone before it was read."""
    (remote_root / "a-folder").mkdir(parents=True)
    (remote_root / "a-folder" / "inside").write_text("keep\n")
    (remote_root / "big-folder").mkdir()
    (remote_root / "big-folder" / "inside").write_text("keep too\n")
    (remote_root / "blocker").write_text("a file where a folder should be\n")
    good = [
        job(
            tmp_path / f"d{i % 10}" / f"f{i}",
            f"file {i}\n".encode() * 200,
            remote_root / f"d{i % 10}" / f"f{i}",
        )
        for i in range(500)
    ]
    bad = [
        job(tmp_path / "small", b"small\n", remote_root / "a-folder"),
        job(tmp_path / "big", os.urandom(3 * CHUNK + 5), remote_root / "big-folder"),
        job(tmp_path / "x", b"x\n", remote_root / "blocker" / "deeper" / "x"),
        UploadJob(tmp_path / "never-written", str(remote_root / "gone"), 0o644, 0),
    ]
    return good, bad


def assert_fails_exactly(
    remote: SshRemote, good: list[UploadJob], bad: list[UploadJob], remote_root: Path
) -> None:
    batch = [*good[:150], bad[0], *good[150:300], bad[1], bad[2], *good[300:], bad[3]]
    outcomes = remote.upload_many(batch)
    by_target = {o.job.remote: o for o in outcomes}
    for upload in good:
        assert_landed(upload, by_target[upload.remote])
    for upload in bad:
        assert isinstance(by_target[upload.remote].error, RemoteFileError), upload
    # Nothing half-written: the folders that stood where files were to go are as they were,
    # nothing took a failed file's name, and no temp file is left anywhere.
    assert (remote_root / "a-folder" / "inside").read_text() == "keep\n"
    assert (remote_root / "big-folder" / "inside").read_text() == "keep too\n"
    assert (remote_root / "blocker").read_text() == "a file where a folder should be\n"
    assert not (remote_root / "gone").exists()
    assert temp_files(remote_root) == []
    assert remote.connected


def test_a_failure_inside_a_pipelined_batch_fails_exactly_that_file(
    remote: SshRemote, tmp_path: Path, remote_root: Path
) -> None:
    good, bad = mixed_batch(tmp_path, remote_root)
    remote.upload_many([good[0]])  # the first requests of a connection learn what the server is
    assert remote._traits.max_files > 64  # the server's handles bound the files in flight
    assert_fails_exactly(remote, good, bad, remote_root)


def test_the_safe_path_fails_exactly_that_file_too(
    remote: SshRemote, tmp_path: Path, remote_root: Path
) -> None:
    """A server whose handle limit is unknown: at most a few files are in flight."""
    good, bad = mixed_batch(tmp_path, remote_root)
    remote.upload_many([good[0]])
    remote._traits = traits.UNKNOWN
    assert_fails_exactly(remote, good, bad, remote_root)


def test_the_window_is_bounded_by_the_server_s_handles(
    remote: SshRemote, tmp_path: Path, remote_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Never more files open on the server than it said it allows: a 10 000-file first sync
    must not run a server with 1 024 file descriptors out of them."""
    jobs = [job(tmp_path / f"f{i}", b"x\n", remote_root / f"f{i}") for i in range(300)]
    remote.upload_many(jobs[:1])
    remote._traits = traits.ServerTraits(max_files=7)
    most = 0
    sent = Wire.send

    def counting(self: Wire, kind: int, on_reply: OnReply, *args: Arg) -> int:
        nonlocal most
        if kind in (CMD_OPEN, CMD_CLOSE):  # handles are reused: count, don't collect
            counts[kind] += 1
        most = max(most, counts[CMD_OPEN] - counts[CMD_CLOSE])
        return sent(self, kind, on_reply, *args)

    counts = {CMD_OPEN: 0, CMD_CLOSE: 0}
    monkeypatch.setattr(Wire, "send", counting)
    for upload, outcome in zip(jobs, remote.upload_many(jobs), strict=True):
        assert_landed(upload, outcome)
    assert 1 < most <= 7


def test_the_look_before_an_upload_opens_its_temps_and_leaves_none_behind(
    remote: SshRemote, tmp_path: Path, remote_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (remote_root / "ops").mkdir()
    jobs = [
        job(tmp_path / f"f{i}", f"{i}\n".encode(), remote_root / "ops" / f"f{i}") for i in range(6)
    ]
    refused = job(tmp_path / "key", KEY_BLOCK, remote_root / "ops" / "key")
    looked = [j.remote for j in [*jobs, refused]]
    assert remote.stat_many(looked) == dict.fromkeys(looked)
    assert len(temp_files(remote_root)) == len(looked)  # one temp per target, opened already
    opens = 0
    sent = Wire.send

    def counting(self: Wire, kind: int, on_reply: OnReply, *args: Arg) -> int:
        nonlocal opens
        opens += kind == CMD_OPEN
        return sent(self, kind, on_reply, *args)

    monkeypatch.setattr(Wire, "send", counting)
    # Four of them are uploaded, one is refused, two are not part of the batch after all.
    outcomes = remote.upload_many([*jobs[:4], refused])
    assert opens == 0  # the upload went straight to its writes
    for upload, outcome in zip(jobs[:4], outcomes, strict=False):
        assert_landed(upload, outcome)
    assert outcomes[4].refused is not None
    assert temp_files(remote_root) == []
    # A look that no upload follows: its temps go with the next request.
    remote.stat_many([jobs[4].remote])
    assert len(temp_files(remote_root)) == 1
    assert dict(remote.list_folders([str(remote_root / "ops")]))
    assert temp_files(remote_root) == []
