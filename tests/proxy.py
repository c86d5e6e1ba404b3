"""A small TCP proxy for fault injection: pass traffic, black-hole it, reset or drop connections.

`TcpProxy(target_port)` listens on 127.0.0.1 (its `port`) and forwards every connection to the
target. Two threads pump each connection, one per direction, in chunks:

* `stall()` black-holes traffic: nothing more is read or forwarded, connections stay open and
  new ones are accepted but not forwarded, as when the network vanishes without a word.
  `stall_after(n)` does the same once `n` more bytes went from client to server, so a test can
  stop an upload in the middle, deterministically.
* `resume()` lets everything flow again, what was held included (TCP retransmits after an outage).
* `reset()` closes every open connection with a TCP RST; `drop()` closes them with a FIN.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from types import TracebackType
from typing import Self

CHUNK = 16 * 1024


class _Pair:
    def __init__(self, client: socket.socket) -> None:
        self.client = client
        self.upstream: socket.socket | None = None

    def close(self, *, reset: bool) -> None:
        for sock in (self.client, self.upstream):
            if sock is None:
                continue
            with contextlib.suppress(OSError):
                if reset:  # linger 0: close() sends RST instead of FIN
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                else:
                    sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()


class TcpProxy:
    host = "127.0.0.1"

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self._listener = socket.create_server((self.host, 0))
        self.port: int = self._listener.getsockname()[1]
        self._flowing = threading.Event()
        self._flowing.set()
        self._lock = threading.Lock()
        self._pairs: list[_Pair] = []
        self._budget: int | None = None  # client→server bytes left before stalling
        self._closed = False
        self.faults: list[str] = []  # what was injected, in order
        self._thread = threading.Thread(target=self._accept, name="proxy-accept", daemon=True)

    # -- control ---------------------------------------------------------------------------

    @property
    def stalled(self) -> bool:
        return not self._flowing.is_set()

    def stall(self) -> None:
        self.faults.append("stall")
        self._flowing.clear()

    def stall_after(self, up_bytes: int) -> None:
        """Black-hole once `up_bytes` more bytes went from client to server."""
        with self._lock:
            self._budget = up_bytes

    def resume(self) -> None:
        with self._lock:
            self._budget = None
        self._flowing.set()

    def reset(self) -> None:
        self.faults.append("reset")
        self._close_all(reset=True)

    def drop(self) -> None:
        self.faults.append("drop")
        self._close_all(reset=False)

    def _close_all(self, *, reset: bool) -> None:
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            pair.close(reset=reset)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._closed = True
        self._flowing.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        with contextlib.suppress(OSError):
            self._listener.close()
        self._close_all(reset=False)
        self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # -- pumping -----------------------------------------------------------------------------

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            pair = _Pair(client)
            with self._lock:
                self._pairs.append(pair)
            threading.Thread(target=self._open, args=(pair,), daemon=True).start()

    def _open(self, pair: _Pair) -> None:
        self._flowing.wait()  # a black hole answers no new connection either
        try:
            pair.upstream = socket.create_connection(self.target, timeout=5)
            pair.upstream.settimeout(None)
        except OSError:
            self._forget(pair, reset=True)  # as a closed port would: the client sees a reset
            return
        threading.Thread(
            target=self._pump, args=(pair, pair.client, pair.upstream, True), daemon=True
        ).start()
        self._pump(pair, pair.upstream, pair.client, False)

    def _pump(self, pair: _Pair, source: socket.socket, sink: socket.socket, up: bool) -> None:
        try:
            while True:
                self._flowing.wait()
                data = source.recv(CHUNK)
                if not data:
                    break
                if up:
                    data = self._spend(data, sink)
                self._flowing.wait()
                sink.sendall(data)
        except OSError:
            pass
        self._forget(pair, reset=False)

    def _spend(self, data: bytes, sink: socket.socket) -> bytes:
        """Forward what the stall budget allows now; the rest waits for `resume()`."""
        with self._lock:
            if self._budget is None:
                return data
            allowed = min(len(data), self._budget)
            self._budget -= allowed
            if self._budget > 0:
                return data
            self._budget = None
            self.faults.append("stall")
            self._flowing.clear()
        sink.sendall(data[:allowed])
        return data[allowed:]

    def _forget(self, pair: _Pair, *, reset: bool) -> None:
        with self._lock:
            if pair not in self._pairs:
                return
            self._pairs.remove(pair)
        pair.close(reset=reset)
