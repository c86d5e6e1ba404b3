"""Which keys to offer a server, in OpenSSH's order: agent first, then files, then passphrases.

For each identity (``remote.identity_file``, else the ssh config's ``IdentityFile``, else the
default files): when ssh-agent holds the same key (matched by its public blob, read from the
file's header or its ``.pub``), the agent signs, also with ``IdentitiesOnly yes``. Other agent
keys follow unless ``IdentitiesOnly``. Unencrypted files come next; an encrypted one not in
the agent is unlocked only where a person can type its passphrase (a one-shot command on a
terminal, once per run); elsewhere it is remembered as *locked*, so a refusal can say
``ssh-add PATH``. Certificates (``CertificateFile``, ``PATH-cert.pub``) go first for their key.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import paramiko
import structlog
from paramiko.pkey import PublicBlob

from opswatch.ssh.endpoint import Endpoint, default_identities
from opswatch.ssh.keyfile import (
    LOAD_ERRORS,
    KeyFile,
    certifies,
    inspect_key_file,
    load_private_key,
)

log = structlog.get_logger("opswatch.remote")

PASSPHRASE_TRIES = 3  # as ssh's NumberOfPasswordPrompts

PassphrasePrompt = Callable[[Path], str]

_prompt: PassphrasePrompt | None = None
_unlocked: dict[Path, paramiko.PKey] = {}  # keys a person unlocked in this run: asked once


def allow_passphrase_prompt(prompt: PassphrasePrompt | None) -> None:
    """Let encrypted keys be unlocked by asking (one-shot commands on a terminal only)."""
    global _prompt
    _prompt = prompt


@dataclass(frozen=True)
class Offer:
    """One public key authentication attempt: a key, with or without a certificate."""

    key: paramiko.PKey
    certificate: PublicBlob | None
    source: str  # "agent" or the identity file

    def describe(self) -> str:
        kind = f"{self.key.get_name()} certificate" if self.certificate else self.key.get_name()
        return f"{kind} from {self.source}"


class KeyRing:
    """The offers for one endpoint; after iterating, ``locked`` names keys that were skipped."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.locked: list[Path] = []  # encrypted, not in the agent, and nobody to ask
        self._agent: paramiko.Agent | None = None

    def offers(self) -> Iterator[Offer]:
        files = [self._inspect(path) for path in self._identity_paths()]
        usable = [f for f in files if f.problem is None]
        agent_keys = self._agent_keys()
        by_blob = {key.asbytes(): key for key in agent_keys}
        in_agent: set[bytes] = set()
        for file in usable:
            key = by_blob.get(file.public_blob) if file.public_blob else None
            if key is not None:
                in_agent.add(key.asbytes())
                yield from self._with_certificates(key, f"ssh-agent ({file.path})", file.path)
        if not self.endpoint.identities_only:
            for key in agent_keys:
                if key.asbytes() not in in_agent:
                    yield from self._with_certificates(key, "ssh-agent", None)
        for file in usable:
            if file.public_blob is None or file.public_blob not in by_blob:
                loaded = self._load(file)
                if loaded is not None:
                    yield from self._with_certificates(loaded, str(file.path), file.path)

    def close(self) -> None:
        if self._agent is not None:
            self._agent.close()
            self._agent = None

    def _identity_paths(self) -> tuple[Path, ...]:
        return self.endpoint.identity_files or default_identities()

    def _inspect(self, path: Path) -> KeyFile:
        file = inspect_key_file(path)
        if file.missing and not self.endpoint.identity_files:
            log.debug("identity_missing", path=str(path))
        elif file.problem is not None:
            log.warning("identity_unusable", path=str(path), error=file.problem)
        return file

    def _agent_keys(self) -> list[paramiko.AgentKey]:
        if not os.environ.get("SSH_AUTH_SOCK"):
            return []
        try:
            self._agent = paramiko.Agent()
            return list(self._agent.get_keys())
        except (paramiko.SSHException, OSError) as exc:
            log.warning("agent_unusable", error=str(exc) or type(exc).__name__)
            return []

    def _load(self, file: KeyFile) -> paramiko.PKey | None:
        if file.public_only:
            log.warning(
                "identity_unusable",
                path=str(file.path),
                error="a public key whose private key ssh-agent does not hold",
            )
            return None
        if not file.encrypted:
            try:
                return load_private_key(file.path)
            except LOAD_ERRORS as exc:
                log.warning("identity_unusable", path=str(file.path), error=_reason(exc))
                return None
        if file.path in _unlocked:
            return _unlocked[file.path]
        if _prompt is None:
            self.locked.append(file.path)
            return None
        return self._unlock(file.path, _prompt)

    def _unlock(self, path: Path, prompt: PassphrasePrompt) -> paramiko.PKey | None:
        for _ in range(PASSPHRASE_TRIES):
            passphrase = prompt(path)
            if not passphrase:  # an empty answer skips the key, as ssh does
                break
            try:
                key = load_private_key(path, passphrase)
            except LOAD_ERRORS:
                log.warning("bad_passphrase", path=str(path))
                continue
            _unlocked[path] = key
            return key
        self.locked.append(path)
        return None

    def _with_certificates(
        self, key: paramiko.PKey, source: str, path: Path | None
    ) -> Iterator[Offer]:
        for certificate in self._certificates(key, path):
            yield Offer(key, certificate, source)
        yield Offer(key, None, source)

    def _certificates(self, key: paramiko.PKey, path: Path | None) -> list[PublicBlob]:
        candidates = list(self.endpoint.certificate_files)
        if path is not None:
            candidates.append(path.with_name(path.name + "-cert.pub"))
        found = []
        for candidate in dict.fromkeys(candidates):
            try:
                blob = PublicBlob.from_file(str(candidate))
            except FileNotFoundError:
                continue
            except (OSError, ValueError, IndexError, paramiko.SSHException) as exc:
                log.warning("certificate_unusable", path=str(candidate), error=_reason(exc))
                continue
            if certifies(blob.key_blob, key.asbytes()):
                found.append(blob)
        return found


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    return str(exc) or type(exc).__name__


def locked_hint(locked: list[Path]) -> str:
    """The one line for a refusal after an encrypted key could not be offered."""
    path = locked[0]
    return (
        f"the key {path} is encrypted and ssh-agent does not hold it: "
        f"run `ssh-add {path}`, then try again"
    )


def no_key_hint() -> str:
    """Why no key was offered: most often a service that cannot see the login's ssh-agent."""
    agent = os.environ.get("SSH_AUTH_SOCK")
    if not agent:
        return (
            "no key found and SSH_AUTH_SOCK is not set: set remote.identity_file or pass the agent"
        )
    if not os.path.exists(agent):
        return f"no key found; the ssh-agent socket SSH_AUTH_SOCK={agent} does not exist"
    return f"no key found; the ssh-agent at {agent} holds no keys (ssh-add)"
