"""SSH servers that are not OpenSSH, run as a process of their own on 127.0.0.1 for the tests.

    python tests/sftp_servers.py asyncssh|paramiko WORKDIR [--no-posix-rename] [--exec]

asyncssh's SFTP server advertises and implements posix-rename@openssh.com; ``--no-posix-rename``
withholds it (advertised and handled), as appliances and older servers do. ``--exec`` lets it run
commands through /bin/sh. The paramiko server is what paramiko-based servers usually are: its
SFTP handles cannot ``fsetstat``, it never advertises posix-rename (``--no-posix-rename`` also
leaves it unimplemented) and it runs no commands.

`SftpServerProcess` starts one with fresh keys and the attributes `write_config` reads (host,
port, user, known_hosts, client_key); the process prints "ready" once it listens.
"""

from __future__ import annotations

import argparse
import os
import pwd
import subprocess
import sys
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
READY_TIMEOUT_S = 20.0


class SftpServerProcess:
    """One server process and what a config needs to reach it; a context manager."""

    host = HOST

    def __init__(self, workdir: Path, kind: str, *options: str) -> None:
        from opswatch.demo.sshd import _keygen, _public_key

        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.user = pwd.getpwuid(os.getuid()).pw_name
        self.host_key = workdir / "host_key"
        self.client_key = workdir / "client_key"
        self.known_hosts = workdir / "known_hosts"
        _keygen(self.host_key, "opswatch-test-host")
        _keygen(self.client_key, "opswatch-test-client")
        (workdir / "authorized_keys").write_text(_public_key(self.client_key) + "\n")
        self.log_path = workdir / "server.log"
        command = [sys.executable, __file__, kind, str(workdir), *options]
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed by stop()
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=self._log)
        assert self.process.stdout is not None
        line = self.process.stdout.readline().decode()  # "ready PORT", or EOF if it died
        if not line.startswith("ready "):
            self.stop()
            raise RuntimeError(f"{kind} server did not start:\n{self.log_path.read_text()}")
        self.port = int(line.split()[1])
        name = f"[{HOST}]:{self.port}"
        self.known_hosts.write_text(f"{name} {_public_key(self.host_key)}\n")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        if self.process.stdout is not None:
            self.process.stdout.close()
        self._log.close()

    def __enter__(self) -> SftpServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- asyncssh --------------------------------------------------------------------------------


def run_asyncssh(workdir: Path, *, posix_rename: bool, allow_exec: bool) -> None:
    import asyncio

    import asyncssh
    from asyncssh import sftp

    if not posix_rename:
        name = b"posix-rename@openssh.com"
        handler = sftp.SFTPServerHandler
        handler._extensions = [e for e in handler._extensions if e[0] != name]
        handler._packet_handlers = {k: v for k, v in handler._packet_handlers.items() if k != name}

    async def run_command(process: Any) -> None:
        if not allow_exec:
            process.stderr.write(b"no commands here\n")
            process.exit(1)
            return
        local = await asyncio.create_subprocess_exec(
            "/bin/sh",
            "-c",
            process.command,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        await process.redirect(stdin=local.stdin, stdout=local.stdout, stderr=local.stderr)
        process.exit(await local.wait())

    async def main() -> None:
        server = await asyncssh.create_server(
            asyncssh.SSHServer,
            HOST,
            0,
            server_host_keys=[str(workdir / "host_key")],
            authorized_client_keys=str(workdir / "authorized_keys"),
            sftp_factory=True,
            process_factory=run_command,
            encoding=None,
        )
        port = server.sockets[0].getsockname()[1]
        print(f"ready {port}", flush=True)
        await server.serve_forever()

    asyncio.run(main())


# -- paramiko --------------------------------------------------------------------------------


def run_paramiko(workdir: Path, *, with_posix_rename: bool) -> None:
    import socket
    import threading

    import paramiko

    host_key = paramiko.Ed25519Key.from_private_key_file(str(workdir / "host_key"))
    allowed = (workdir / "authorized_keys").read_text().split()[1]

    class Server(paramiko.ServerInterface):
        def get_allowed_auths(self, username: str) -> str:
            return "publickey"

        def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
            ok = key.get_base64() == allowed
            return paramiko.AUTH_SUCCESSFUL if ok else paramiko.AUTH_FAILED

        def check_channel_request(self, kind: str, chanid: int) -> int:
            if kind == "session":
                return paramiko.OPEN_SUCCEEDED
            return paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    class Handle(paramiko.SFTPHandle):
        """No ``chattr``: FSETSTAT answers "operation unsupported", as in most such servers."""

        def stat(self) -> Any:
            return paramiko.SFTPAttributes.from_stat(os.fstat(self.readfile.fileno()))

    class Files(paramiko.SFTPServerInterface):
        def list_folder(self, path: str) -> Any:
            try:
                return [
                    paramiko.SFTPAttributes.from_stat(os.lstat(os.path.join(path, n)), n)
                    for n in os.listdir(path)
                ]
            except OSError as exc:
                return paramiko.SFTPServer.convert_errno(exc.errno)

        def stat(self, path: str) -> Any:
            try:
                return paramiko.SFTPAttributes.from_stat(os.stat(path))
            except OSError as exc:
                return paramiko.SFTPServer.convert_errno(exc.errno)

        lstat = stat

        def open(self, path: str, flags: int, attr: Any) -> Any:
            try:
                fd = os.open(path, flags, attr.st_mode or 0o666)
                handle = Handle(flags)
                mode = "wb" if flags & (os.O_WRONLY | os.O_RDWR) else "rb"
                handle.readfile = handle.writefile = os.fdopen(fd, mode)
                return handle
            except OSError as exc:
                return paramiko.SFTPServer.convert_errno(exc.errno)

        def remove(self, path: str) -> int:
            try:
                os.remove(path)
            except OSError as exc:
                return paramiko.SFTPServer.convert_errno(exc.errno)
            return paramiko.SFTP_OK

        def mkdir(self, path: str, attr: Any) -> int:
            try:
                os.mkdir(path, attr.st_mode or 0o777)
            except OSError as exc:
                return paramiko.SFTPServer.convert_errno(exc.errno)
            return paramiko.SFTP_OK

        def chattr(self, path: str, attr: Any) -> int:
            try:
                paramiko.SFTPServer.set_file_attr(path, attr)
            except OSError as exc:
                return paramiko.SFTPServer.convert_errno(exc.errno)
            return paramiko.SFTP_OK

        def canonicalize(self, path: str) -> str:
            return os.path.normpath(os.path.join("/", path))

        if with_posix_rename:

            def posix_rename(self, oldpath: str, newpath: str) -> int:
                try:
                    os.rename(oldpath, newpath)
                except OSError as exc:
                    return paramiko.SFTPServer.convert_errno(exc.errno)
                return paramiko.SFTP_OK

    def serve(conn: socket.socket) -> None:
        transport = paramiko.Transport(conn)
        transport.add_server_key(host_key)
        transport.set_subsystem_handler("sftp", paramiko.SFTPServer, Files)
        transport.start_server(server=Server())
        while transport.is_active():
            channel = transport.accept(1.0)
            if channel is not None:
                continue  # the subsystem handler serves it on its own thread

    listener = socket.socket()
    listener.bind((HOST, 0))
    listener.listen(16)
    print(f"ready {listener.getsockname()[1]}", flush=True)
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=["asyncssh", "paramiko"])
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--no-posix-rename", action="store_true")
    parser.add_argument("--exec", action="store_true")
    args = parser.parse_args()
    if args.kind == "asyncssh":
        run_asyncssh(args.workdir, posix_rename=not args.no_posix_rename, allow_exec=args.exec)
    else:
        run_paramiko(args.workdir, with_posix_rename=not args.no_posix_rename)


if __name__ == "__main__":
    main()
