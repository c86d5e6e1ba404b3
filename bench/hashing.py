"""What "content decides" costs a single edit: hashing the edited file before it is sent.

A file whose size and mtime changed is hashed and compared with the sha256 the manifest kept;
this is the only work added to the single-edit path (and only for a file the manifest knows
at the same size and mode). Prints the median time of `file_sha256` per file size, cold page
cache not forced: an edited file was just written, so its pages are in memory.

    python3 bench/hashing.py [--repeats N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from opswatch.local.content import file_sha256

SIZES = {"1 KiB": 1024, "4 KiB": 4096, "64 KiB": 65536, "1 MiB": 1 << 20, "50 MiB": 50 << 20}


def median_ms(path: Path, repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        file_sha256(path)
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        print(f"{'size':>8}  {'median ms':>10}")
        for label, size in SIZES.items():
            path = Path(folder) / label.replace(" ", "")
            path.write_bytes(os.urandom(size))
            repeats = args.repeats if size < (8 << 20) else max(3, args.repeats // 10)
            print(f"{label:>8}  {median_ms(path, repeats):>10.3f}")


if __name__ == "__main__":
    main()
