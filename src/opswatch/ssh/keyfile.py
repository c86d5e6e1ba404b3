"""Reading one identity file as OpenSSH does, without the passphrase and without ever raising.

What a key file holds is decided from its armour and header (never from a library's error
text): OpenSSH's own format carries the public key and the cipher name in clear, so an
encrypted key can be matched against ssh-agent without asking for its passphrase; a PEM key's
public half comes from the ``.pub`` next to it.
"""

from __future__ import annotations

import base64
import binascii
import struct
from dataclasses import dataclass
from pathlib import Path

import paramiko
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

OPENSSH_ARMOUR = b"-----BEGIN OPENSSH PRIVATE KEY-----"
OPENSSH_MAGIC = b"openssh-key-v1\0"
PEM_ARMOUR = (b"-----BEGIN ", b" PRIVATE KEY-----")
MAX_KEY_FILE = 1 << 20  # a private key is a few KiB; a bigger file is not one

# What a damaged or foreign key file makes paramiko and cryptography raise while loading it.
# ValueError: bad padding, wrong passphrase, broken checksum; TypeError: a passphrase given to
# an unencrypted key or none to an encrypted one; IndexError and struct.error: a truncated blob.
LOAD_ERRORS = (
    paramiko.SSHException,
    ValueError,
    TypeError,
    IndexError,
    struct.error,
    UnsupportedAlgorithm,
    OSError,
)


@dataclass(frozen=True)
class KeyFile:
    """What an identity file is, read without its passphrase."""

    path: Path
    public_blob: bytes | None  # the public key in SSH wire form, when known without decrypting
    encrypted: bool
    problem: str | None = None  # why it can't be used at all; None: usable
    missing: bool = False
    public_only: bool = False  # IdentityFile names a .pub: only the agent can sign for it


def inspect_key_file(path: Path) -> KeyFile:
    """Classify ``path``: missing, unreadable, not a private key, encrypted or not."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_KEY_FILE + 1)
    except FileNotFoundError:
        return KeyFile(path, None, False, "no such file", missing=True)
    except OSError as exc:
        return KeyFile(path, None, False, f"cannot read it: {exc.strerror or exc}")
    if len(data) > MAX_KEY_FILE:
        return KeyFile(path, None, False, "too big to be a private key")
    public = _public_file_blob(path)
    if OPENSSH_ARMOUR in data:
        return _inspect_openssh(path, data, public)
    start = data.find(PEM_ARMOUR[0])
    if start != -1 and PEM_ARMOUR[1] in data[start:]:
        encrypted = b"ENCRYPTED" in data  # "Proc-Type: 4,ENCRYPTED" or PKCS#8 "ENCRYPTED"
        return KeyFile(path, public, encrypted)
    if data.startswith((b"ssh-", b"ecdsa-", b"sk-")):
        # As OpenSSH allows: ``IdentityFile key.pub`` picks that key from the agent (hardware
        # keys, password managers' agents).
        fields = data.split()
        try:
            blob = base64.b64decode(fields[1], validate=True) if len(fields) >= 2 else None
        except (ValueError, binascii.Error):
            blob = None
        if blob:
            return KeyFile(path, blob, False, public_only=True)
    return KeyFile(path, None, False, _not_a_key(data))


def _not_a_key(data: bytes) -> str:
    if data.startswith(b"PuTTY-User-Key-File"):
        return "a PuTTY key; convert it with `puttygen KEY -O private-openssh -o KEY.openssh`"
    return "not a private key file"


def _inspect_openssh(path: Path, data: bytes, public: bytes | None) -> KeyFile:
    try:
        body = data.split(OPENSSH_ARMOUR, 1)[1].split(b"-----END", 1)[0]
        raw = base64.b64decode(b"".join(body.split()), validate=True)
        if not raw.startswith(OPENSSH_MAGIC):
            raise ValueError("no openssh-key-v1 header")
        fields, offset = [], len(OPENSSH_MAGIC)
        for _ in range(3):  # ciphername, kdfname, kdfoptions
            field, offset = _ssh_string(raw, offset)
            fields.append(field)
        (count,) = struct.unpack_from(">I", raw, offset)
        blob, _ = _ssh_string(raw, offset + 4)
    except (ValueError, binascii.Error, struct.error):
        return KeyFile(path, None, False, "a damaged OpenSSH private key")
    if count != 1:
        return KeyFile(path, None, False, f"holds {count} keys; OpenSSH writes one per file")
    return KeyFile(path, blob or public, fields[0] != b"none")


def _ssh_string(raw: bytes, offset: int) -> tuple[bytes, int]:
    (length,) = struct.unpack_from(">I", raw, offset)
    end = offset + 4 + length
    if end > len(raw):
        raise ValueError("truncated")
    return raw[offset + 4 : end], end


def _public_file_blob(path: Path) -> bytes | None:
    """The key in ``PATH.pub``, if that file exists and holds one."""
    try:
        fields = path.with_name(path.name + ".pub").read_text(encoding="ascii").split()
        return base64.b64decode(fields[1], validate=True) if len(fields) >= 2 else None
    except (OSError, ValueError, binascii.Error):
        return None


def load_private_key(path: Path, passphrase: str | None = None) -> paramiko.PKey:
    """The key in ``path``; raises one of ``LOAD_ERRORS`` when it can't be loaded.

    Not ``PKey.from_path``: that also loads ``PATH-cert.pub`` and fails the key when the
    certificate is damaged; certificates are chosen separately (``keys.py``).
    """
    data = path.read_bytes()
    secret = passphrase.encode() if passphrase is not None else None
    loaded: object
    try:
        loaded = serialization.load_ssh_private_key(data, password=secret)
    except ValueError:
        loaded = serialization.load_pem_private_key(data, password=secret)
    kind: type[paramiko.PKey]
    if isinstance(loaded, rsa.RSAPrivateKey):
        kind = paramiko.RSAKey
    elif isinstance(loaded, ed25519.Ed25519PrivateKey):
        kind = paramiko.Ed25519Key
    elif isinstance(loaded, ec.EllipticCurvePrivateKey):
        kind = paramiko.ECDSAKey
    else:
        raise UnsupportedAlgorithm(f"{type(loaded).__name__} keys are not supported")
    return kind.from_private_key_file(str(path), password=passphrase)


def certifies(certificate: bytes, key_blob: bytes) -> bool:
    """Whether an OpenSSH certificate blob is for the key ``key_blob`` (PROTOCOL.certkeys).

    A certificate is ``string type, string nonce`` followed by the key's own public fields,
    which in the key's blob follow its type name.
    """
    try:
        cert_type, offset = _ssh_string(certificate, 0)
        _nonce, offset = _ssh_string(certificate, offset)
        key_type, key_offset = _ssh_string(key_blob, 0)
    except (ValueError, struct.error):
        return False
    if not cert_type.startswith(key_type + b"-cert-"):
        return False
    return certificate[offset:].startswith(key_blob[key_offset:])
