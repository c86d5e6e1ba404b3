"""Opening the one SSH connection: dial, handshake, host key check, keys, the SFTP channel.

paramiko errors met on the way become ``opswatch.errors`` types through ``ssh/failures.py``;
what the connection is then used for (files, commands) is ``remote.py``'s business.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import paramiko
import structlog
from paramiko.pkey import UnknownKeyType
from paramiko.ssh_exception import IncompatiblePeer

from opswatch.errors import AuthError, ChangedHostKeyError, ConnectError, UnknownHostKeyError
from opswatch.ssh._compat import (
    accept_rfc_curve25519,
    record_offered_algorithms,
    set_transport_poll,
)
from opswatch.ssh.endpoint import Endpoint, default_identities
from opswatch.ssh.failures import translated
from opswatch.ssh.proxy import ProxySocket
from opswatch.ssh.server import SftpInfo, negotiation_mismatch, parse_version_packet

log = structlog.get_logger("opswatch.remote")

# GCM first: it roughly halves client CPU per byte against CTR + HMAC.
PREFERRED_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "aes128-ctr")
STALL_S = 30.0  # an SFTP request unanswered this long means the link is dead: cut it
# paramiko's transport thread polls its socket this often; its default (0.1 s) costs idle CPU.
TRANSPORT_POLL_S = 1.0
NO_SFTP = "the server offers no sftp subsystem (Subsystem sftp in sshd_config)"
# paramiko's transport thread logs a failed handshake with its traceback; opswatch reports the
# failure itself, in one line, so the transport logs here until the handshake is done.
HANDSHAKE_LOG = "opswatch.ssh.handshake"
logging.getLogger(HANDSHAKE_LOG).setLevel(logging.CRITICAL + 1)


@dataclass(frozen=True)
class HostKey:
    """A server's host key as known_hosts writes it and as ``ssh`` prints its fingerprint."""

    key_type: str  # "ssh-ed25519"
    base64: str
    fingerprint: str  # "SHA256:…"

    @property
    def short_type(self) -> str:
        """What ``ssh`` calls the type in "ED25519 key fingerprint is …"."""
        name = self.key_type.removeprefix("ssh-").split("-")[0]
        return "ECDSA" if name == "ecdsa" else name.upper()


def fingerprint(key: paramiko.PKey) -> str:
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


class SftpChannel:
    """The SFTP channel, noting since when a request has gone unanswered.

    SFTP is strictly request → reply, so bytes sent with nothing received since is exactly
    "waiting on the server". Only the engine thread sends and receives on it; the stall
    watchdog only reads ``waiting_since``.
    """

    def __init__(self, channel: paramiko.Channel) -> None:
        self.channel = channel
        self.waiting_since: float | None = None
        # The bytes of the server's first reply, SSH_FXP_VERSION: paramiko reads its extension
        # list and throws it away, and it says whether posix-rename@openssh.com is there.
        self.first_reply: bytearray | None = bytearray()

    def send(self, data: bytes) -> int:
        if self.waiting_since is None:
            self.waiting_since = time.monotonic()
        return self.channel.send(data)

    def sendall(self, data: bytes) -> None:
        if self.waiting_since is None:
            self.waiting_since = time.monotonic()
        self.channel.sendall(data)

    def recv(self, size: int) -> bytes:
        data = self.channel.recv(size)
        if data:
            self.waiting_since = None
            if self.first_reply is not None:
                self.first_reply += data
        return data

    def version_reply(self) -> SftpInfo:
        """The SFTP version reply read so far; stops recording."""
        packet, self.first_reply = bytes(self.first_reply or b""), None
        return parse_version_packet(packet)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.channel, name)


class StallWatchdog(threading.Thread):
    """Cuts the transport when an SFTP request stays unanswered for ``stall_s``.

    A black-holed peer makes paramiko block forever in a socket write (its packetizer retries
    timeouts until the transport is closed), so the deadline must be enforced from outside.
    """

    def __init__(self, link: SftpChannel, transport: paramiko.Transport, stall_s: float) -> None:
        super().__init__(name="opswatch-stall-watchdog", daemon=True)
        self.link = link
        self.transport = transport
        self.stall_s = stall_s
        self.fired = False
        self._stop = threading.Event()

    def run(self) -> None:
        while not self._stop.wait(min(1.0, self.stall_s / 4)):
            since = self.link.waiting_since
            if since is not None and time.monotonic() - since > self.stall_s:
                self.fired = True
                log.warning("stalled", seconds=self.stall_s, action="closing the connection")
                self.transport.close()  # wakes every blocked channel read and socket write
                return

    def stop(self) -> None:
        self._stop.set()


@dataclass
class Link:
    """An authenticated transport with its SFTP client and the watchdog guarding it."""

    transport: paramiko.Transport
    sftp: paramiko.SFTPClient
    watchdog: StallWatchdog
    sftp_info: SftpInfo
    proxy: ProxySocket | None = None

    def close(self) -> None:
        self.watchdog.stop()
        # No polite SFTP close first: it writes to the socket, and on a black-holed link whose
        # send buffer is full that write never returns. Closing the transport writes nothing.
        self.transport.close()
        if self.proxy is not None:
            self.proxy.close()


def open_link(endpoint: Endpoint, *, timeout: float, stall_s: float = STALL_S) -> Link:
    """Connect, verify the host key, authenticate, and open the SFTP channel."""
    return _Connector(endpoint, timeout).open(stall_s)


def fetch_host_key(endpoint: Endpoint, *, timeout: float) -> HostKey:
    """The key the server offers, fetched without authenticating and without checking it."""
    return _Connector(endpoint, timeout).server_host_key()


class _Connector:
    def __init__(self, endpoint: Endpoint, timeout: float) -> None:
        self.endpoint = endpoint
        self.timeout = timeout  # connect, banner, handshake, auth, channel open
        self.proxy: ProxySocket | None = None

    def _transport(self) -> paramiko.Transport:
        transport = paramiko.Transport(self._dial())
        transport.set_log_channel(HANDSHAKE_LOG)
        accept_rfc_curve25519(transport)
        return transport

    def _close(self, transport: paramiko.Transport) -> None:
        transport.close()
        if self.proxy is not None:
            self.proxy.close()

    def open(self, stall_s: float) -> Link:
        transport = self._transport()
        # paramiko waits up to an hour for a channel and 30 s for auth by default.
        transport.auth_timeout = self.timeout
        transport.channel_timeout = self.timeout
        try:
            self._negotiate(transport)
            self._check_host_key(transport)
            self._authenticate(transport)
            # No paramiko keepalive: it expects no reply, so it detects nothing, and it would
            # look like an unanswered request. TCP keepalive and the daemon's probe do the job.
            channel, sftp = self._open_sftp(transport)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            self._close(transport)  # the link died between the steps above
            raise ConnectError(f"connecting to {self.endpoint.describe()} failed: {exc}") from exc
        except BaseException:
            self._close(transport)
            raise
        set_transport_poll(transport, TRANSPORT_POLL_S)
        watchdog = StallWatchdog(channel, transport, stall_s)
        watchdog.start()
        info = channel.version_reply()
        log.info(
            "connected",
            host=self.endpoint.describe(),
            cipher=getattr(transport, "remote_cipher", "?"),
            sftp_extensions=list(info.names),
        )
        return Link(transport, sftp, watchdog, info, self.proxy)

    def _open_sftp(self, transport: paramiko.Transport) -> tuple[SftpChannel, paramiko.SFTPClient]:
        """The SFTP channel, with a read deadline before its first exchange (the version)."""
        where = self.endpoint.describe()
        try:
            channel = transport.open_session(timeout=self.timeout)
            channel.settimeout(self.timeout)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise ConnectError(f"sftp session with {where} failed: {exc}") from exc
        try:
            channel.invoke_subsystem("sftp")
        except paramiko.SSHException as exc:
            if not transport.is_active():
                raise ConnectError(f"sftp session with {where} failed: {exc}") from exc
            raise ConnectError(f"{where}: {NO_SFTP}") from exc  # the request was refused
        watched = SftpChannel(channel)
        try:
            sftp = paramiko.SFTPClient(watched)  # type: ignore[arg-type]
        except (paramiko.SSHException, EOFError) as exc:
            if not transport.is_active() or watched.first_reply:
                raise ConnectError(f"sftp session with {where} failed: {exc}") from exc
            # Accepted, then closed without a word: the configured program could not start.
            raise ConnectError(f"{where}: {NO_SFTP}: it ended before answering") from exc
        except OSError as exc:
            raise ConnectError(f"sftp session with {where} failed: {exc}") from exc
        channel.settimeout(self.timeout * 3)  # the deadline of every later SFTP reply
        return watched, sftp

    def server_host_key(self) -> HostKey:
        transport = self._transport()
        try:
            self._start_client(transport)
            key = transport.get_remote_server_key()
        finally:
            self._close(transport)
        return HostKey(key.get_name(), key.get_base64(), fingerprint(key))

    def _dial(self) -> socket.socket:
        ep = self.endpoint
        if ep.proxy_command:
            command = ep.proxy_command.replace("%h", ep.hostname).replace("%p", str(ep.port))
            describe = f"ProxyJump {ep.proxy_jump}" if ep.proxy_jump else "ProxyCommand"
            self.proxy = ProxySocket(command.replace("%r", ep.user), describe)
            return self.proxy.sock
        with translated(f"cannot reach {ep.hostname}:{ep.port}"):
            sock = socket.create_connection((ep.hostname, ep.port), timeout=self.timeout)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for option, value in (("TCP_KEEPIDLE", 15), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 3)):
            if hasattr(socket, option):
                sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)
        return sock

    def _negotiate(self, transport: paramiko.Transport) -> None:
        options = transport.get_security_options()
        available = list(options.ciphers)
        options.ciphers = tuple(
            [c for c in PREFERRED_CIPHERS if c in available]
            + [c for c in available if c not in PREFERRED_CIPHERS]
        )
        known = self._known_keys()
        if known:
            # Ask for a key type we can verify, as OpenSSH does for hosts it knows.
            types = [t for t in options.key_types if t in known]
            options.key_types = tuple(types + [t for t in options.key_types if t not in types])
        self._start_client(transport)

    def _start_client(self, transport: paramiko.Transport) -> None:
        transport.banner_timeout = self.timeout
        transport.handshake_timeout = self.timeout
        offered = record_offered_algorithms(transport)
        where = self.endpoint.describe()
        try:
            # A bit longer than the banner deadline, so a silent peer fails with that reason.
            transport.start_client(timeout=self.timeout + 1)
        except IncompatiblePeer as exc:
            mismatch = negotiation_mismatch(offered, transport.get_security_options())
            raise ConnectError(f"{where}: {mismatch or exc}") from exc
        except (paramiko.SSHException, OSError, EOFError) as exc:
            proxy_failed = self.proxy.failure() if self.proxy is not None else None
            raise ConnectError(proxy_failed or f"ssh handshake with {where} failed: {exc}") from exc
        if not transport.is_active() or transport.host_key is None:
            proxy_failed = self.proxy.failure() if self.proxy is not None else None
            # start_client returns quietly when its own deadline passes mid-handshake.
            raise ConnectError(
                proxy_failed or f"ssh handshake with {where} timed out after {self.timeout + 1:g} s"
            )
        transport.set_log_channel("paramiko.transport")

    def _known_keys(self) -> dict[str, paramiko.PKey]:
        path = self.endpoint.known_hosts
        if not path.is_file():
            return {}
        with translated(f"{path}: cannot read known_hosts"):
            host_keys = paramiko.HostKeys(str(path))
        entry = host_keys.lookup(self.endpoint.known_hosts_name)
        return dict(entry) if entry else {}

    def _check_host_key(self, transport: paramiko.Transport) -> None:
        key = transport.get_remote_server_key()
        known = self._known_keys()
        name = self.endpoint.known_hosts_name
        if not known:
            raise UnknownHostKeyError(
                f"host key of {name} is not in {self.endpoint.known_hosts} "
                f"({key.get_name()} {fingerprint(key)}); check it, then run `opswatch trust`"
            )
        expected = known.get(key.get_name())
        if expected is None or expected.asbytes() != key.asbytes():
            raise ChangedHostKeyError(
                f"HOST KEY OF {name} HAS CHANGED (now {key.get_name()} {fingerprint(key)}); "
                f"if the server was rebuilt, run `ssh-keygen -R '{name}' -f "
                f"{self.endpoint.known_hosts}` and `opswatch trust`, else someone may be "
                "intercepting the connection"
            )

    def _candidate_keys(self) -> Iterator[paramiko.PKey]:
        ep = self.endpoint
        for path in ep.identity_files or default_identities():
            try:
                yield paramiko.PKey.from_path(str(path))
            except FileNotFoundError:
                log.debug("identity_missing", path=str(path))
            except (paramiko.SSHException, UnknownKeyType, OSError, ValueError) as exc:
                log.warning("identity_unusable", path=str(path), error=str(exc))
        if not ep.identities_only:
            try:
                yield from paramiko.Agent().get_keys()
            except paramiko.SSHException as exc:
                log.warning("agent_unusable", error=str(exc))

    def _authenticate(self, transport: paramiko.Transport) -> None:
        tried = 0
        for key in self._candidate_keys():
            tried += 1
            with translated(f"authentication with {self.endpoint.describe()} failed"):
                try:
                    transport.auth_publickey(self.endpoint.user, key)
                except paramiko.AuthenticationException:
                    continue  # this key was refused: the next one may not be
            if transport.is_authenticated():
                return
        hint = "" if tried else f" ({_no_key_hint()})"
        raise AuthError(
            f"{self.endpoint.describe()} refused every key offered ({tried} tried){hint}"
        )


def _no_key_hint() -> str:
    """Why no key was offered: most often a service that cannot see the login's ssh-agent."""
    agent = os.environ.get("SSH_AUTH_SOCK")
    if not agent:
        return (
            "no key found and SSH_AUTH_SOCK is not set: set remote.identity_file or pass the agent"
        )
    if not os.path.exists(agent):
        return f"no key found; the ssh-agent socket SSH_AUTH_SOCK={agent} does not exist"
    return f"no key found; the ssh-agent at {agent} holds no keys (ssh-add)"
