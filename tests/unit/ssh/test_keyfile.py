"""Identity files classified from their armour and header, never from a library's error text."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

from keytools import PASSPHRASE, keygen
from opswatch.ssh.keyfile import certifies, inspect_key_file, load_private_key


def blob_of(public: Path) -> bytes:
    return base64.b64decode(public.read_text().split()[1])


def test_an_encrypted_openssh_key_shows_its_public_half_without_the_passphrase(
    tmp_path: Path,
) -> None:
    key = keygen(tmp_path / "id", passphrase=PASSPHRASE)
    expected = blob_of(tmp_path / "id.pub")
    (tmp_path / "id.pub").unlink()
    found = inspect_key_file(key)
    assert (found.encrypted, found.problem, found.public_blob) == (True, None, expected)
    assert load_private_key(key, PASSPHRASE).asbytes() == expected


def test_a_pem_key_takes_its_public_half_from_the_pub_file(tmp_path: Path) -> None:
    key = keygen(tmp_path / "rsa", passphrase=PASSPHRASE, kind="rsa", pem=True)
    found = inspect_key_file(key)
    assert found.encrypted and found.problem is None
    assert found.public_blob == blob_of(tmp_path / "rsa.pub")
    (tmp_path / "rsa.pub").unlink()
    assert inspect_key_file(key).public_blob is None


def test_what_is_not_a_usable_private_key_is_named(tmp_path: Path) -> None:
    (tmp_path / "folder").mkdir()
    (tmp_path / "text").write_text("hello\n")
    (tmp_path / "ppk").write_text("PuTTY-User-Key-File-3: ssh-ed25519\n")
    (tmp_path / "broken").write_text(
        "-----BEGIN OPENSSH PRIVATE KEY-----\nnot base64 at all!\n"
        "-----END OPENSSH PRIVATE KEY-----\n"
    )
    assert inspect_key_file(tmp_path / "missing").missing
    assert "cannot read" in (inspect_key_file(tmp_path / "folder").problem or "")
    assert inspect_key_file(tmp_path / "text").problem == "not a private key file"
    assert "puttygen" in (inspect_key_file(tmp_path / "ppk").problem or "")
    assert "damaged" in (inspect_key_file(tmp_path / "broken").problem or "")


def test_a_public_key_as_identity_is_usable_only_through_the_agent(tmp_path: Path) -> None:
    keygen(tmp_path / "id")
    found = inspect_key_file(tmp_path / "id.pub")
    assert found.public_only and found.problem is None
    assert found.public_blob == blob_of(tmp_path / "id.pub")


def test_a_certificate_is_matched_to_its_own_key_only(tmp_path: Path) -> None:
    authority = keygen(tmp_path / "ca")
    mine, other = keygen(tmp_path / "mine"), keygen(tmp_path / "other")
    subprocess.run(
        ["ssh-keygen", "-q", "-s", str(authority), "-I", "t", "-n", "u", f"{mine}.pub"],
        check=True,
        capture_output=True,
    )
    certificate = blob_of(tmp_path / "mine-cert.pub")
    assert certifies(certificate, blob_of(tmp_path / "mine.pub"))
    assert not certifies(certificate, blob_of(tmp_path / "other.pub"))
    assert not certifies(b"garbage", blob_of(tmp_path / "other.pub"))
    assert other.exists()
