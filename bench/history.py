"""What the deploy history costs a batch: recording it (the files' bytes kept, one row each)
and asking git where the repository stands.

    python3 bench/history.py [--repeats N]

Prints the median time of `Recorder.record` for a 1-file edit and a 500-file burst of 2 KiB
files (first time: the bytes are stored; again: they are kept already), and of `git_state`
on this checkout. Both run on the engine thread after the batch landed, before its rebuilds.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from opswatch.local.gitstate import GitState, git_state
from opswatch.local.history import History
from opswatch.model import LocalFile, Upload
from opswatch.ssh.transfer import UploadJob, UploadOutcome
from opswatch.sync.recording import Recorder

FILE_BYTES = 2048


def median_ms(action: Callable[[], object], repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def sent(root: Path, count: int) -> list[tuple[Upload, UploadOutcome]]:
    """``count`` freshly written files, as the syncer reports them once they landed."""
    pairs = []
    for index in range(count):
        path = root / f"f{index}.txt"
        data = os.urandom(FILE_BYTES)
        path.write_bytes(data)
        upload = Upload(path.name, "/srv/" + path.name, LocalFile(FILE_BYTES, 0, 0o644))
        job = UploadJob(path, upload.remote, 0o644, 0)
        pairs.append((upload, UploadOutcome(job, hashlib.sha256(data).hexdigest(), FILE_BYTES)))
    return pairs


def record_ms(folder: Path, count: int, repeats: int) -> tuple[float, float]:
    first, again = [], []
    for attempt in range(repeats):
        root = folder / f"{count}-{attempt}"
        root.mkdir()
        recorder = Recorder(History(root / "history", 200 << 20), root, git=lambda _: GitState())
        pairs = sent(root, count)
        for samples in (first, again):
            started = time.perf_counter()
            recorder.record("batch", pairs, [])
            samples.append((time.perf_counter() - started) * 1000)
        recorder.history.close()
    return statistics.median(first), statistics.median(again)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        print(f"{'batch':>10}  {'first ms':>9}  {'again ms':>9}")
        for count in (1, 500):
            first, again = record_ms(folder, count, args.repeats)
            print(f"{count:>4} files  {first:>9.1f}  {again:>9.1f}")
    here = Path(__file__).resolve().parent
    print(f"git status: {median_ms(lambda: git_state(here), args.repeats):.1f} ms")


if __name__ == "__main__":
    main()
