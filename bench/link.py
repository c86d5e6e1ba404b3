"""A WAN-like link on loopback: a TCP proxy that delays and rate-limits, one FIFO per direction.

    python3 bench/link.py TARGET_PORT RTT_MS MBIT    # prints the port it listens on, then serves

Every chunk read from one side is delivered to the other no sooner than RTT/2 after it was read
and no sooner than the previous chunk of that direction plus its own serialisation time at the
rate: ``free = max(read_at, free) + len / rate; deliver_at = free + RTT/2``. Each direction is
its own FIFO (nothing overtakes), with a bounded queue, so a sender is held back by TCP as by a
router's buffer. It listens on 127.0.0.1 only. ``LinkedServer`` runs it in its own process (so
its timers do not share an interpreter with the benchmark's polling) in front of a
``LocalSshd``, and offers the same attributes the contenders use: an ssh_config, a known_hosts
and a port that go through the link.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

READ = 16 * 1024  # bytes per chunk: ~2.6 ms of serialisation at 50 Mbit/s
QUEUED = 256  # chunks waiting per direction (4 MiB): the "router buffer"
HOST = "127.0.0.1"


async def _direction(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, one_way: float, rate: float
) -> None:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(QUEUED)

    async def read() -> None:
        free = 0.0
        while True:
            data = await reader.read(READ)
            now = loop.time()
            free = max(now, free) + len(data) / rate
            await queue.put((free + one_way, data))
            if not data:
                return

    async def deliver() -> None:
        while True:
            due, data = await queue.get()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                with contextlib.suppress(OSError):
                    writer.write_eof()
                return
            writer.write(data)
            await writer.drain()

    try:
        await asyncio.gather(read(), deliver())
    except (OSError, asyncio.IncompleteReadError):
        writer.close()


async def _serve(target: int, one_way: float, rate: float) -> None:
    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection(HOST, target)
        except OSError:
            client_w.close()
            return
        await asyncio.gather(
            _direction(client_r, server_w, one_way, rate),
            _direction(server_r, client_w, one_way, rate),
            return_exceptions=True,
        )
        client_w.close()
        server_w.close()

    server = await asyncio.start_server(handle, HOST, 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


def parse(spec: str) -> tuple[float, float]:
    """``"40:50"`` → (40.0 ms round trip, 50.0 Mbit/s)."""
    rtt, _, mbit = spec.partition(":")
    return float(rtt), float(mbit)


@dataclass
class LinkedServer:
    """A ``LocalSshd`` seen through the link: what the contenders read of a server."""

    sshd: object  # the LocalSshd behind the link
    rtt_ms: float
    mbit: float
    work: Path
    port: int = 0
    process: subprocess.Popen[str] | None = None

    def start(self) -> LinkedServer:
        self.process = subprocess.Popen(
            [sys.executable, __file__, str(self.sshd.port), str(self.rtt_ms), str(self.mbit)],  # type: ignore[attr-defined]
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        self.port = int(self.process.stdout.readline())
        self.work.mkdir(parents=True, exist_ok=True)
        sshd = self.sshd
        key = sshd.known_hosts.read_text().split(None, 1)[1]  # type: ignore[attr-defined]
        self.known_hosts.write_text(f"[{HOST}]:{self.port} {key}")
        lines = sshd.ssh_config.read_text().splitlines()  # type: ignore[attr-defined]
        lines = [self._rewrite(line) for line in lines]
        self.ssh_config.write_text("\n".join(lines) + "\n")
        return self

    def _rewrite(self, line: str) -> str:
        word = line.split()[0] if line.split() else ""
        if word == "Port":
            return f"    Port {self.port}"
        if word == "UserKnownHostsFile":
            return f"    UserKnownHostsFile {self.known_hosts}"
        return line

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None

    @property
    def known_hosts(self) -> Path:
        return self.work / "known_hosts"

    @property
    def ssh_config(self) -> Path:
        return self.work / "ssh_config"

    def __getattr__(self, name: str) -> object:  # host, user, alias, client_key: the sshd's
        return getattr(self.sshd, name)


def main(argv: list[str]) -> None:
    target, rtt_ms, mbit = int(argv[0]), float(argv[1]), float(argv[2])
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(target, rtt_ms / 2000, mbit * 1e6 / 8))


if __name__ == "__main__":
    main(sys.argv[1:])
