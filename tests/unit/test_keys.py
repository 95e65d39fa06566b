"""KeyRing: file modes, reuse, refusal of loose permissions, RFC 7638 kids, rotation."""

from __future__ import annotations

import base64
import hashlib
import json
import multiprocessing
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from core.errors import ConfigError, InvalidToken
from core.keys import KeyRing, jwk_thumbprint, public_jwk

# RFC 8037 appendix A.1 (private key "d", public key "x") and A.3 (its thumbprint).
RFC8037_D = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"
RFC8037_X = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
RFC8037_THUMBPRINT = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _independent_thumbprint(raw_public: bytes) -> str:
    """RFC 7638 §3.1 by hand: required members, lexicographic order, no whitespace."""
    x = base64.urlsafe_b64encode(raw_public).rstrip(b"=").decode()
    canonical = '{"crv":"Ed25519","kty":"OKP","x":"' + x + '"}'
    digest = hashlib.sha256(canonical.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    """With umask 0, only explicit modes keep files private: proves the code sets them."""
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


@pytest.mark.usefixtures("permissive_umask")
def test_first_load_creates_private_key_0600_in_a_0700_directory(tmp_path: Path) -> None:
    keys_dir = tmp_path / "keys"
    ring = KeyRing.load_or_create(keys_dir)

    assert _mode(keys_dir) == 0o700
    assert _mode(keys_dir / "active.key") == 0o600
    assert _mode(keys_dir / "public") == 0o700
    assert (keys_dir / "active.key").read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert (keys_dir / "public" / f"{ring.active_kid}.pem").exists()
    assert [p.name for p in keys_dir.iterdir() if p.name.endswith(".tmp")] == []


def test_second_load_reuses_the_key(tmp_path: Path) -> None:
    first = KeyRing.load_or_create(tmp_path)
    second = KeyRing.load_or_create(tmp_path)

    assert second.active_kid == first.active_kid
    assert second.private_key.private_bytes_raw() == first.private_key.private_bytes_raw()


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644])
def test_private_key_readable_by_others_is_refused_naming_the_file(
    tmp_path: Path, mode: int
) -> None:
    KeyRing.load_or_create(tmp_path)
    key_file = tmp_path / "active.key"
    key_file.chmod(mode)

    with pytest.raises(ConfigError) as excinfo:
        KeyRing.load_or_create(tmp_path)
    assert str(key_file) in excinfo.value.detail


def test_owner_only_read_key_0400_is_accepted(tmp_path: Path) -> None:
    kid = KeyRing.load_or_create(tmp_path).active_kid
    (tmp_path / "active.key").chmod(0o400)

    assert KeyRing.load_or_create(tmp_path).active_kid == kid


def test_key_directory_writable_by_others_is_refused(tmp_path: Path) -> None:
    keys_dir = tmp_path / "keys"
    keys_dir.mkdir()
    keys_dir.chmod(0o777)

    with pytest.raises(ConfigError) as excinfo:
        KeyRing.load_or_create(keys_dir)
    assert str(keys_dir) in excinfo.value.detail


def test_thumbprint_matches_the_rfc_8037_vector() -> None:
    private = Ed25519PrivateKey.from_private_bytes(_b64url_decode(RFC8037_D))
    public = private.public_key()

    assert public.public_bytes_raw() == _b64url_decode(RFC8037_X)
    assert jwk_thumbprint(public) == RFC8037_THUMBPRINT
    assert _independent_thumbprint(public.public_bytes_raw()) == RFC8037_THUMBPRINT


def test_kid_is_the_rfc_7638_thumbprint_of_the_key_on_disk(tmp_path: Path) -> None:
    ring = KeyRing.load_or_create(tmp_path)
    on_disk = serialization.load_pem_private_key(
        (tmp_path / "active.key").read_bytes(), password=None
    )
    assert isinstance(on_disk, Ed25519PrivateKey)

    assert ring.active_kid == _independent_thumbprint(on_disk.public_key().public_bytes_raw())


def test_jwks_has_the_published_shape(tmp_path: Path) -> None:
    ring = KeyRing.load_or_create(tmp_path)
    x = base64.urlsafe_b64encode(ring.private_key.public_key().public_bytes_raw())

    assert ring.jwks() == {
        "keys": [
            {
                "kty": "OKP",
                "crv": "Ed25519",
                "x": x.rstrip(b"=").decode(),
                "kid": ring.active_kid,
                "use": "sig",
                "alg": "EdDSA",
            }
        ]
    }


def test_rotate_deletes_the_old_private_key_and_keeps_its_public_key(tmp_path: Path) -> None:
    ring = KeyRing.load_or_create(tmp_path)
    old_kid = ring.active_kid
    old_secret = ring.private_key.private_bytes_raw()
    old_public = ring.private_key.public_key().public_bytes_raw()

    new_kid = ring.rotate()

    assert new_kid != old_kid
    assert ring.active_kid == new_kid
    assert [k["kid"] for k in ring.jwks()["keys"]] == [new_kid, old_kid]
    assert (tmp_path / "public" / f"{old_kid}.pem").exists()
    assert ring.public_key(old_kid).public_bytes_raw() == old_public
    reloaded = KeyRing.load_or_create(tmp_path)
    assert reloaded.active_kid == new_kid
    assert [k["kid"] for k in reloaded.jwks()["keys"]] == [new_kid, old_kid]
    for path in tmp_path.rglob("*"):
        if path.is_file():
            pem = path.read_bytes()
            if b"PRIVATE KEY" in pem:
                loaded = serialization.load_pem_private_key(pem, password=None)
                assert isinstance(loaded, Ed25519PrivateKey)
                assert loaded.private_bytes_raw() != old_secret


def test_rotate_overwrites_the_old_private_key_before_letting_go(tmp_path: Path) -> None:
    ring = KeyRing.load_or_create(tmp_path)
    survivor = tmp_path.parent / f"{tmp_path.name}-survivor"
    os.link(tmp_path / "active.key", survivor)  # a second name for the old inode

    ring.rotate()

    assert survivor.read_bytes().strip(b"\0") == b""


def test_rotations_by_another_process_are_seen_without_reload(tmp_path: Path) -> None:
    here = KeyRing.load_or_create(tmp_path)
    elsewhere = KeyRing.load_or_create(tmp_path)

    newer = elsewhere.rotate()

    assert (
        here.public_key(newer).public_bytes_raw() == elsewhere.public_key(newer).public_bytes_raw()
    )
    assert newer in [k["kid"] for k in here.jwks()["keys"]]


@pytest.mark.parametrize("kid", ["no-such-kid", "../active", "A" * 43, ""])
def test_unknown_kid_is_an_invalid_token(tmp_path: Path, kid: str) -> None:
    ring = KeyRing.load_or_create(tmp_path)

    with pytest.raises(InvalidToken):
        ring.public_key(kid)


def test_public_file_whose_name_is_not_its_thumbprint_is_refused(tmp_path: Path) -> None:
    ring = KeyRing.load_or_create(tmp_path)
    impostor = Ed25519PrivateKey.generate().public_key()
    forged_kid = "B" * 43
    (tmp_path / "public" / f"{forged_kid}.pem").write_bytes(
        impostor.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )

    with pytest.raises(InvalidToken):
        ring.public_key(forged_kid)
    with pytest.raises(ConfigError):
        KeyRing.load_or_create(tmp_path)


def test_missing_public_copy_of_the_active_key_is_restored(tmp_path: Path) -> None:
    kid = KeyRing.load_or_create(tmp_path).active_kid
    (tmp_path / "public" / f"{kid}.pem").unlink()  # as if we crashed right after creating it

    KeyRing.load_or_create(tmp_path)

    assert (tmp_path / "public" / f"{kid}.pem").exists()


def _start(directory: str, barrier: multiprocessing.synchronize.Barrier) -> str:
    barrier.wait()
    return KeyRing.load_or_create(Path(directory)).active_kid


def test_processes_starting_together_agree_on_one_key(tmp_path: Path) -> None:
    keys_dir = tmp_path / "keys"
    context = multiprocessing.get_context("fork")
    barrier = context.Manager().Barrier(6)
    with context.Pool(6) as pool:
        kids = pool.starmap(_start, [(str(keys_dir), barrier)] * 6)

    assert len(set(kids)) == 1
    assert [p.stem for p in (keys_dir / "public").iterdir()] == [kids[0]]
    assert [p.name for p in keys_dir.iterdir() if p.name.endswith(".tmp")] == []


def test_ring_from_jwks_verifies_but_cannot_sign(tmp_path: Path) -> None:
    ring = KeyRing.load_or_create(tmp_path)
    old_kid = ring.active_kid
    old_public = ring.private_key.public_key().public_bytes_raw()
    ring.rotate()
    token = ring.sign({"hello": "world"}, typ="example+jwt")

    verifier = KeyRing.from_jwks(ring.jwks())

    assert verifier.verify(token, typ="example+jwt") == {"hello": "world"}
    assert verifier.active_kid == ring.active_kid
    assert verifier.public_key(old_kid).public_bytes_raw() == old_public
    with pytest.raises(ConfigError):
        _ = verifier.private_key
    with pytest.raises(ConfigError):
        verifier.rotate()


def test_ring_from_jwks_refuses_a_kid_that_is_not_the_thumbprint() -> None:
    jwk = public_jwk(Ed25519PrivateKey.generate().public_key())
    jwk["kid"] = "chosen-by-attacker"

    with pytest.raises(ConfigError):
        KeyRing.from_jwks({"keys": [jwk]})


def test_verify_refuses_another_typ(tmp_path: Path) -> None:
    ring = KeyRing.load_or_create(tmp_path)
    token = ring.sign({"a": 1}, typ="one+jwt")

    assert ring.verify(token, typ="one+jwt") == {"a": 1}
    assert ring.verify(token, typ="application/ONE+jwt") == {"a": 1}
    with pytest.raises(InvalidToken):
        ring.verify(token, typ="other+jwt")


def test_token_header_names_the_active_kid(tmp_path: Path) -> None:
    ring = KeyRing.load_or_create(tmp_path)
    token = ring.sign({"a": 1}, typ="one+jwt")
    header = json.loads(_b64url_decode(token.split(".")[0]))

    assert header == {"alg": "EdDSA", "typ": "one+jwt", "kid": ring.active_kid}
