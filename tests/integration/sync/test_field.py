"""A field test: random laptop trees, synced by the real CLI into the real sshd.

Hypothesis builds a tree under a routed folder: names with unicode, control characters, bytes
that are not UTF-8 and up to 255 bytes; modes with special bits; mtimes from 1900 to 2200;
symlinks inside and out of the tree and to never-listed files; hard links; FIFOs; sockets;
empty and unreadable folders; an ignore file of random patterns. Then `opswatch sync` must:

* exit 0, 1 or 2, with an `error:` line when not 0, and never print a traceback;
* leave no byte of a never-listed or outside file on the server, and no temp file;
* land every selected regular file byte for byte (unless the config itself was refused).

Then the same under the daemon, with random edits while it watches (writes, deletes, files
swapped for links to never-listed or outside files, hard links, FIFOs, special modes): the engine
stays alive, every selected file lands, nothing never-listed or outside does, no temp file stays.

The default suite runs a few examples; `--hypothesis-profile=long` runs many.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import SEED_FILES, WriteConfig
from daemon_process import opswatch_command
from engine_thread import EngineThread
from helpers import wait_until
from opswatch.config import load_config, pattern_problem
from opswatch.core.keyblock import holds_private_key
from opswatch.core.rules import Router, Verdict
from opswatch.demo.sshd import LocalSshd
from opswatch.errors import OpswatchError
from opswatch.ssh.transfer import is_temp_name

pytestmark = pytest.mark.sshd

LONG = settings.default == settings.get_profile("long")
EXAMPLES = settings.default.max_examples if LONG else 6
FOLDER = "docs/ops/runbooks"
NEVER_MARK = b"NEVER-LEAVES-9d1c"
OUTSIDE_MARK = b"OUTSIDE-LEAVES-4e2a"
NEVER_NAMES = [".env", ".ENV", "prod.env", ".envrc", "id_rsa", "ID_ECDSA", "server.Key", "a.pem"]
IGNORE_ALPHABET = "ab*?[]!\\/.-z#"

# -- what a tree holds -------------------------------------------------------------------------

text_names = (
    st.text(st.characters(exclude_characters="/\0", exclude_categories=("Cs",)), max_size=30)
    .map(os.fsencode)
    .filter(lambda n: n not in (b"", b".", b"..") and len(n) <= 255)
)
long_names = st.integers(200, 255).map(lambda n: b"L" * (n - 3) + b".md")
bad_names = st.binary(max_size=8).map(
    lambda b: b"bad\xff" + b.replace(b"/", b"_").replace(b"\0", b"_")
)
names = st.one_of(text_names, long_names, bad_names)
modes = st.sampled_from([0o644, 0o600, 0o755, 0o000, 0o4755, 0o2750, 0o1644, 0o4777])
mtimes = st.integers(-2_208_988_800, 7_258_118_400)  # 1900 … 2200
KINDS = [
    "file",
    "file",
    "file",
    "never",
    "link_inside",
    "link_outside",
    "link_never",
    "hard_never",
    "fifo",
    "socket",
    "empty_dir",
    "unreadable_dir",
]


@dataclass(frozen=True)
class Entry:
    kind: str
    name: bytes
    content: bytes
    mode: int
    mtime: int
    sub: bool  # in a subfolder rather than the routed folder itself


entries = st.builds(
    Entry,
    kind=st.sampled_from(KINDS),
    name=names,
    content=st.binary(max_size=300),
    mode=modes,
    mtime=mtimes,
    sub=st.booleans(),
)
ignore_files = st.one_of(
    st.none(), st.lists(st.text(IGNORE_ALPHABET, min_size=1, max_size=6), max_size=3)
)


@dataclass
class Tree:
    """What was made, and what must be on the server afterwards (path → bytes)."""

    expected: dict[str, bytes] = field(default_factory=dict)
    locked: list[Path] = field(default_factory=list)


# -- making it ---------------------------------------------------------------------------------


def build(repo: Path, outside: Path, items: list[Entry], ignore: list[str] | None) -> Tree:
    base = os.fsencode(repo / FOLDER)
    (outside / "outside.md").write_bytes(OUTSIDE_MARK)
    secret = os.path.join(base, b".env")
    with open(secret, "wb") as handle:
        handle.write(NEVER_MARK)
    tree = Tree()
    made: list[tuple[bytes, bytes]] = []  # (path, content) of plain files
    for number, item in enumerate(items):
        folder = os.path.join(base, b"sub") if item.sub else base
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, b"%d-" % number + item.name)[: len(folder) + 1 + 255]
        if os.path.lexists(path):
            continue
        _make(item, path, secret, outside, made, tree)
    if ignore is not None:
        (repo / FOLDER / ".opswatchignore").write_text("\n".join(ignore) + "\n")
    tree.expected = {
        os.fsdecode(os.path.relpath(p, os.fsencode(repo))): c for p, c in made if os.path.lexists(p)
    }
    return tree


def _make(
    item: Entry,
    path: bytes,
    secret: bytes,
    outside: Path,
    made: list[tuple[bytes, bytes]],
    tree: Tree,
) -> None:
    kind = item.kind
    if kind in ("file", "never"):
        if kind == "never":
            path = os.path.join(
                os.path.dirname(path), NEVER_NAMES[item.mode % len(NEVER_NAMES)].encode()
            )
            if os.path.lexists(path):
                return
        with open(path, "wb") as handle:
            handle.write(NEVER_MARK if kind == "never" else item.content)
        os.utime(path, (item.mtime, item.mtime))
        os.chmod(path, item.mode)
        if kind == "file":
            made.append((path, item.content))
    elif kind == "link_inside" and made:
        os.symlink(made[-1][0], path)
    elif kind == "link_outside":
        os.symlink(outside / "outside.md", path)
    elif kind == "link_never":
        os.symlink(secret, path)
    elif kind == "hard_never":
        os.link(secret, path)
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "socket":
        _bind_socket(path)
    elif kind in ("empty_dir", "unreadable_dir"):
        os.mkdir(path)
        if kind == "unreadable_dir":
            with open(os.path.join(path, b"inside.md"), "wb") as handle:
                handle.write(item.content)
            os.chmod(path, 0)
            tree.locked.append(Path(os.fsdecode(path)))


def _bind_socket(path: bytes) -> None:
    """A Unix socket at ``path``, whose full path may exceed the ~108 bytes bind() takes."""
    here = os.getcwd()
    os.chdir(os.path.dirname(path))
    try:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.bind(os.path.basename(path))
    except OSError:
        pass  # a name too long even relative: no socket in this example
    finally:
        os.chdir(here)


# -- checking it -------------------------------------------------------------------------------


def selected(repo: Path, config: Path, tree: Tree, ignore: list[str] | None) -> dict[str, bytes]:
    """The files opswatch must land: plain, readable, valid names, selected by the rules."""
    patterns = {FOLDER: ignore} if ignore is not None else {}
    router = Router.from_config(load_config(config), patterns)
    wanted = {}
    for path, content in tree.expected.items():
        info = os.lstat(os.fsencode(repo / path))
        # Files are ours, and root runs bound by file modes: the owner's read bit decides.
        if not info.st_mode & stat.S_IRUSR or not stat.S_ISREG(info.st_mode):
            continue
        if holds_private_key(content):  # refused by content, by design (hypothesis finds those)
            continue
        if router.decide(path).verdict is Verdict.ROUTED:
            wanted[path] = content
    return wanted


def _is_root() -> bool:
    return os.geteuid() == 0


def run_sync(config: Path, state: Path) -> subprocess.CompletedProcess[str]:
    """`opswatch sync`, bound by file modes even under root (which reads any folder)."""
    prefix = []
    if _is_root():
        prefix = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--"]
    return subprocess.run(
        [*prefix, *opswatch_command(), "--config", str(config), "sync"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=dict(os.environ, OPSWATCH_STATE_DIR=str(state)),
    )


@contextmanager
def scratch() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="opswatch-field-"))
    try:
        yield folder
    finally:
        for path in folder.rglob("*"):
            if path.is_dir() and not path.is_symlink():
                path.chmod(0o755)
        shutil.rmtree(folder, ignore_errors=True)


def _repo(folder: Path) -> Path:
    repo = folder / "repo"
    for relative, content in SEED_FILES.items():
        (repo / relative).parent.mkdir(parents=True, exist_ok=True)
        (repo / relative).write_text(content)
    return repo


@pytest.mark.timeout(3600 if LONG else 120)
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(items=st.lists(entries, max_size=14), ignore=ignore_files)
def test_random_trees_sync_safely(
    sshd_server: LocalSshd, write_config: WriteConfig, items: list[Entry], ignore: list[str] | None
) -> None:
    if _is_root() and shutil.which("setpriv") is None:
        pytest.fail("setpriv (util-linux) is needed to make folders unreadable to root")
    with scratch() as folder:
        repo, outside, remote_root = _repo(folder), folder / "outside", folder / "remote"
        outside.mkdir()
        remote_root.mkdir()
        tree = build(repo, outside, items, ignore)
        config = write_config(repo, sshd_server, remote_root)
        done = run_sync(config, folder / "state")
        assert "Traceback" not in done.stderr, done.stderr
        assert done.returncode in (0, 1, 2), done.stdout + done.stderr
        if done.returncode:
            assert "error: " in done.stderr, done.stderr
        on_server = [p for p in remote_root.rglob("*") if p.is_file() or p.is_symlink()]
        assert not [p for p in on_server if is_temp_name(p.name)]
        everything = b"".join(p.read_bytes() for p in on_server if p.is_file())
        assert NEVER_MARK not in everything
        assert OUTSIDE_MARK not in everything
        ignore_ok = ignore is None or all(pattern_problem(p) is None for p in ignore)
        if done.returncode == 2:
            assert not ignore_ok, done.stderr  # only a refused ignore file stops a sync
            return
        assert ignore_ok
        for path, content in selected(repo, config, tree, ignore).items():
            assert (remote_root / path).read_bytes() == content, (path, done.stderr)


# -- the same with the daemon, and random edits while it watches ----------------------------------

EDITS = ["write", "write", "delete", "link_never", "link_outside", "hard_never", "fifo", "chmod"]


@dataclass(frozen=True)
class Edit:
    kind: str
    target: int  # which file of the tree, modulo its size
    name: bytes
    content: bytes
    mode: int


edits = st.builds(
    Edit,
    kind=st.sampled_from(EDITS),
    target=st.integers(0, 50),
    name=names,
    content=st.binary(max_size=300),
    mode=modes,
)


def apply(
    repo: Path, outside: Path, edit: Edit, files: list[bytes], expected: dict[str, bytes]
) -> None:
    """One edit to the watched tree; ``expected`` follows what a plain file now holds."""
    base = os.fsencode(repo / FOLDER)
    secret = os.path.join(base, b".env")
    if edit.kind == "write" or not files:
        path = os.path.join(base, b"e-" + edit.name)[: len(base) + 1 + 255]
        if (os.path.lexists(path) and not os.path.isfile(path)) or os.path.islink(path):
            return
        with open(path, "wb") as handle:
            handle.write(edit.content)
        if path not in files:
            files.append(path)
        expected[os.fsdecode(os.path.relpath(path, os.fsencode(repo)))] = edit.content
        return
    path = files[edit.target % len(files)]
    relative = os.fsdecode(os.path.relpath(path, os.fsencode(repo)))
    if edit.kind == "chmod":
        if os.path.isfile(path) and not os.path.islink(path):
            os.chmod(path, edit.mode)
        return
    files.remove(path)
    expected.pop(relative, None)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    if edit.kind == "link_never":
        os.symlink(secret, path)
    elif edit.kind == "link_outside":
        os.symlink(outside / "outside.md", path)
    elif edit.kind == "hard_never":
        os.link(secret, path)
    elif edit.kind == "fifo":
        os.mkfifo(path)


@contextmanager
def state_folder(folder: Path) -> Iterator[None]:
    before = os.environ.get("OPSWATCH_STATE_DIR")
    os.environ["OPSWATCH_STATE_DIR"] = str(folder)
    try:
        yield
    finally:
        if before is not None:
            os.environ["OPSWATCH_STATE_DIR"] = before


@pytest.mark.timeout(3600 if LONG else 120)
@settings(
    max_examples=max(EXAMPLES // 2, 3),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(changes=st.lists(edits, min_size=1, max_size=12), delete=st.booleans())
def test_random_edits_under_the_daemon_sync_safely(
    sshd_server: LocalSshd, write_config: WriteConfig, changes: list[Edit], delete: bool
) -> None:
    with scratch() as folder:
        repo, outside, remote_root = _repo(folder), folder / "outside", folder / "remote"
        outside.mkdir()
        remote_root.mkdir()
        (outside / "outside.md").write_bytes(OUTSIDE_MARK)
        (repo / FOLDER / ".env").write_bytes(NEVER_MARK)
        config = write_config(repo, sshd_server, remote_root, sync={"delete": delete, **QUIET})
        files = [os.fsencode(repo / FOLDER / "deploy.md")]
        expected = {f"{FOLDER}/deploy.md": (repo / FOLDER / "deploy.md").read_bytes()}
        with state_folder(folder / "state"), EngineThread(config) as engine:
            engine.wait_synced()
            for change in changes:
                apply(repo, outside, change, files, expected)
            with contextlib.suppress(OpswatchError):  # a refused or failed file: exit 1
                engine.request("flush", timeout=60)
            wanted = {
                path: content
                for path, content in expected.items()
                if _plain_and_routed(repo, config, path) and not holds_private_key(content)
            }
            wait_until(
                lambda: all(_landed(remote_root / p, c) for p, c in wanted.items()),
                timeout=30,
                message="every selected file to land",
            )
            engine.request("pause")
            on_server = [p for p in remote_root.rglob("*") if p.is_file()]
            assert not [p for p in on_server if is_temp_name(p.name)]
            everything = b"".join(p.read_bytes() for p in on_server)
            assert NEVER_MARK not in everything and OUTSIDE_MARK not in everything
            status = engine.status()
            assert "Traceback" not in str(status["last_error"])


QUIET = {"debounce_ms": 50, "max_delay_ms": 200}


def _plain_and_routed(repo: Path, config: Path, path: str) -> bool:
    try:
        info = os.lstat(os.fsencode(repo / path))
    except FileNotFoundError:
        return False
    if not stat.S_ISREG(info.st_mode) or info.st_nlink > 1:
        return False
    router = Router.from_config(load_config(config))
    return router.decide(path).verdict is Verdict.ROUTED


def _landed(path: Path, content: bytes) -> bool:
    try:
        return path.read_bytes() == content
    except OSError:
        return False
