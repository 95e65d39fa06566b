"""The service's Ed25519 signing keys, and the JWS discipline every signed artefact follows.

On disk (``STEPUP_KEYS_DIR``, mode 0700, refused if group/world-writable)::

    active.key          PKCS8 PEM of the one private key that signs now (mode 0600)
    public/<kid>.pem    SubjectPublicKeyInfo PEM of every key that was ever active
    keys.json           when each key was created and retired (``core.keyretention``)
    .rotate.lock        taken by ``keys rotate``: one rotation at a time

``kid`` is the RFC 7638 JWK thumbprint of the public key, so a file name can be checked against
its content. Retired public keys are never deleted: signed decisions in the audit log must stay
verifiable for as long as the log is kept; the JWKS lists a retired key only until every
credential it signed has expired. A private key file that group or others can access is
refused, as ssh does. Every write goes to a fresh ``O_EXCL`` temporary file (mode 0600 from
the first byte), is fsynced, then linked or renamed into place, so a reader sees a whole key or
none and a crash leaves the previous, usable state. A crash may leave a ``.*.tmp`` file behind;
it is safe to delete.

Replicas share the directory. A ring looks at it again (three ``stat`` calls) at most every
``CHECK_INTERVAL_SECONDS``, on ``sign``, ``jwks`` and the verification of a kid it does not
know, and reloads it when a rotation changed it: no restart. A new key that cannot be used
(half written, unreadable, too open) never stops the ring signing: it keeps the key it has and
logs the problem once.

``KeyRing.sign``/``KeyRing.verify`` are the only places that produce or check a JWS: alg
EdDSA only, ``kid`` chosen among the ring's keys only, an explicit ``typ`` so one kind of
signed object can never be replayed as another.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from core.errors import ConfigError, InvalidToken
from core.keydir import KID, DirStamp, KeyView, dir_stamp, read_view, rotate_keys
from core.keyfiles import (
    ACTIVE_KEY_FILE,
    PUBLIC_DIR,
    _b64url,
    _b64url_decode,
    _create_first_key,
    _ensure_private_dir,
    _raw_public,
    _read_private_key,
    _read_public_key,
    jwk_thumbprint,
)
from core.keyretention import REQUESTED_TTL_CAP, KeyStatus, key_statuses

ALGORITHM = "EdDSA"
CHECK_INTERVAL_SECONDS = 2.0  # how stale a replica's keys may be after a rotation elsewhere

_MAX_TOKEN_CHARS = 16_384
_UNSUPPORTED_HEADERS = frozenset({"crit", "b64", "jwk", "jku", "x5u", "x5c"})

logger = logging.getLogger(__name__)


class RejectedToken(InvalidToken):
    """``InvalidToken`` that carries a fixed reason code for logs; never any token content.

    ``str()`` stays the opaque "invalid token", so nothing leaks to whoever sent the token.
    """

    def __init__(self, reason: str) -> None:
        super().__init__()
        self.reason = reason


def public_jwk(public_key: Ed25519PublicKey) -> dict[str, str]:
    """The JWK a verifier needs, with ``kid``, ``use`` and ``alg``."""
    return {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": _b64url(_raw_public(public_key)),
        "kid": jwk_thumbprint(public_key),
        "use": "sig",
        "alg": ALGORITHM,
    }


def _typ_matches(header_typ: object, expected: str) -> bool:
    """RFC 7515 §4.1.9: ``application/`` may be omitted and media types compare case-blind."""
    if not isinstance(header_typ, str):
        return False

    def bare(media_type: str) -> str:
        return media_type.lower().removeprefix("application/")

    return bare(header_typ) == bare(expected)


class KeyRing:
    """The active Ed25519 private key plus every public key that ever signed."""

    def __init__(
        self,
        *,
        active_kid: str,
        private_key: Ed25519PrivateKey | None,
        public_keys: Mapping[str, Ed25519PublicKey],
        directory: Path | None,
        view: KeyView | None = None,
        check_interval: float = CHECK_INTERVAL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if active_kid not in public_keys:
            raise ConfigError("the active key is missing from the key ring")
        public = dict(public_keys)
        # Swapped whole, never changed in place: ``sign`` reads it without a lock.
        self._view = view or KeyView(
            active_kid, private_key, public, dict.fromkeys(public, None), {}
        )
        self._directory = directory
        self._lifetime: Callable[[], timedelta] = lambda: REQUESTED_TTL_CAP
        self._interval = check_interval
        self._clock = clock
        self._next_check = clock() + check_interval
        self._lock = threading.Lock()
        self._reported: set[tuple[DirStamp, str]] = set()

    # ----------------------------------------------------------------- construction

    @classmethod
    def load_or_create(
        cls,
        directory: Path,
        *,
        check_interval: float = CHECK_INTERVAL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> KeyRing:
        """Open the ring in ``directory``, creating the directory and a first key if needed.

        Strict: an unusable active key or public file is a ``ConfigError`` here, at start-up.
        """
        _ensure_private_dir(directory)
        _ensure_private_dir(directory / PUBLIC_DIR)
        if _read_private_key(directory / ACTIVE_KEY_FILE) is None:
            _create_first_key(directory)
        view = read_view(directory, strict=True)
        return cls(
            active_kid=view.active_kid,
            private_key=view.private_key,
            public_keys=view.public,
            directory=directory,
            view=view,
            check_interval=check_interval,
            clock=clock,
        )

    @classmethod
    def from_jwks(cls, jwks: Mapping[str, Any]) -> KeyRing:
        """A verification-only ring from a JWKS (active key first), e.g. for ``audit verify``."""
        keys = jwks.get("keys")
        if not isinstance(keys, list) or not keys:
            raise ConfigError("a JWKS needs a non-empty 'keys' list")
        public: dict[str, Ed25519PublicKey] = {}
        for position, jwk in enumerate(keys):
            if not isinstance(jwk, dict) or jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
                raise ConfigError(f"JWKS key {position} is not an Ed25519 OKP key")
            try:
                key = Ed25519PublicKey.from_public_bytes(_b64url_decode(str(jwk.get("x", ""))))
            except ValueError:
                raise ConfigError(f"JWKS key {position} has an unusable 'x'") from None
            kid = jwk_thumbprint(key)
            if jwk.get("kid") != kid:
                raise ConfigError(f"JWKS key {position}: 'kid' is not its RFC 7638 thumbprint")
            public[kid] = key
        first_kid = next(iter(public))
        return cls(active_kid=first_kid, private_key=None, public_keys=public, directory=None)

    def set_credential_lifetime(self, longest: Callable[[], timedelta]) -> None:
        """How long the longest credential lives (asked each time): a retired key stays in
        the JWKS at least that long, plus clock skew. Default: the API's 86,400 s cap."""
        self._lifetime = longest

    # ----------------------------------------------------------------- accessors

    @property
    def active_kid(self) -> str:
        return self._view.active_kid

    @property
    def private_key(self) -> Ed25519PrivateKey:
        key = self._view.private_key
        if key is None:
            raise ConfigError("this key ring is for verification only: it holds no private key")
        return key

    def public_key(self, kid: str) -> Ed25519PublicKey:
        """The public key named ``kid``; ``InvalidToken`` if the ring never held it."""
        key = self._view.public.get(kid)
        if key is None and self._directory is not None and KID.match(kid):
            # Another replica may sign with a key we have not seen yet: look for just this
            # file, and when it is there, look at the whole directory again at once.
            path = self._directory / PUBLIC_DIR / f"{kid}.pem"
            try:
                found = _read_public_key(path, kid)
            except ConfigError:  # a planted or corrupt file: load_or_create reports it loudly
                raise RejectedToken("unusable_kid") from None
            if found is not None:
                self._refresh(wait=True)
                key = self._view.public.get(kid)
                if key is None:  # the directory could not be read: keep what we found
                    with self._lock:
                        self._view = self._view.with_key(kid, found, None)
                    key = found
        if key is None:
            raise RejectedToken("unknown_kid")
        return key

    def key_statuses(self) -> list[KeyStatus]:
        """Every key with its times: the active one first, then the most recently retired."""
        view = self._view
        return key_statuses(view.active_kid, view.created, view.records, lifetime=self._lifetime())

    def jwks(self, now: datetime | None = None) -> dict[str, list[dict[str, str]]]:
        """The active key first, then each retired key until every credential it signed has
        expired at ``now`` (default: the real time)."""
        self._maybe_refresh()
        at = now or datetime.now(UTC)
        view = self._view
        return {
            "keys": [
                public_jwk(view.public[status.kid])
                for status in self.key_statuses()
                if status.published(at)
            ]
        }

    # ----------------------------------------------------------------- rotation

    def rotate(self, now: datetime | None = None, *, lifetime: timedelta | None = None) -> str:
        """Make a new key active; scrub the old private key, keep its public key (in the JWKS
        for ``lifetime`` — default: this ring's — plus clock skew). Returns the new kid."""
        directory = self._directory
        if directory is None:
            raise ConfigError("a key ring loaded from a JWKS cannot rotate")
        new_kid = rotate_keys(
            directory,
            now=now or datetime.now(UTC),
            lifetime=self._lifetime() if lifetime is None else lifetime,
        )
        self._refresh(wait=True)
        return new_kid

    def reload_soon(self) -> None:
        """Look at the keys directory on the next use, not after the interval. Only sets a
        number: safe in a signal handler."""
        self._next_check = float("-inf")

    # ----------------------------------------------------------------- JWS

    def sign(self, payload: Mapping[str, Any], *, typ: str) -> str:
        """A compact JWS of ``payload`` with the active key: alg EdDSA, ``typ``, ``kid``."""
        self._maybe_refresh()
        view = self._view  # kid and key from one snapshot, even while another thread reloads
        if view.private_key is None:
            raise ConfigError("this key ring is for verification only: it holds no private key")
        return jwt.encode(
            dict(payload),
            view.private_key,
            algorithm=ALGORITHM,
            headers={"typ": typ, "kid": view.active_kid},
        )

    def verify(self, token: object, *, typ: str, now: datetime | None = None) -> dict[str, Any]:
        """Check a compact JWS signed by one of the ring's keys; return its JSON payload.

        Only the signature, the algorithm and the header are checked here; claims (times,
        audience...) are the caller's. With ``now``, the key must also be in the JWKS at
        ``now``: a retired key past its retention verifies old decisions (no ``now``), never
        a credential. Any failure is an opaque ``InvalidToken``.
        """
        if not isinstance(token, str) or len(token) > _MAX_TOKEN_CHARS:
            raise RejectedToken("malformed")
        try:
            header = jwt.get_unverified_header(token)
        except Exception:  # hostile input: whatever the parser trips on, the answer is the same
            raise RejectedToken("malformed") from None
        if header.get("alg") != ALGORITHM:
            raise RejectedToken("wrong_alg")
        if not _typ_matches(header.get("typ"), typ):
            raise RejectedToken("wrong_typ")
        if _UNSUPPORTED_HEADERS & header.keys():
            raise RejectedToken("unsupported_header")
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise RejectedToken("missing_kid")
        key = self.public_key(kid)
        try:
            payload: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                options={
                    "verify_signature": True,
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                    "verify_aud": False,
                    "verify_iss": False,
                    "verify_sub": False,
                    "verify_jti": False,
                },
            )
        except jwt.InvalidSignatureError:
            raise RejectedToken("bad_signature") from None
        except Exception:
            raise RejectedToken("malformed") from None
        if now is not None and kid != self._view.active_kid and not self._published(kid, now):
            raise RejectedToken("retired_kid")
        return payload

    # ----------------------------------------------------------------- reloading

    def _published(self, kid: str, now: datetime) -> bool:
        return any(s.kid == kid and s.published(now) for s in self.key_statuses())

    def _maybe_refresh(self) -> None:
        """The hot path's cost when nothing is due: one clock read and a comparison."""
        if self._directory is not None and self._clock() >= self._next_check:
            self._refresh(wait=False)

    def _refresh(self, *, wait: bool) -> None:
        """Reload the directory if it changed; on any problem keep the keys we have."""
        directory = self._directory
        if directory is None or not self._lock.acquire(blocking=wait):
            return  # another thread is looking right now
        try:
            self._next_check = self._clock() + self._interval
            stamp = dir_stamp(directory)
            if stamp == self._view.stamp:
                return
            try:
                view = read_view(directory, strict=False)
            except (ConfigError, OSError) as exc:
                detail = exc.detail if isinstance(exc, ConfigError) else f"{exc.strerror}"
                self._report(stamp, f"cannot use the keys in {directory} ({detail})")
                return
            previous = self._view
            self._view = view
            self._reported.clear()
            for problem in view.problems:
                self._report(stamp, f"skipped a public key: {problem}")
            if view.active_kid != previous.active_kid:
                logger.info(
                    "signing key %s is now active (was %s), read from %s",
                    view.active_kid,
                    previous.active_kid,
                    directory / ACTIVE_KEY_FILE,
                )
        finally:
            self._lock.release()

    def _report(self, stamp: DirStamp, message: str) -> None:
        """Log a problem once for each state of the directory (not every two seconds)."""
        if (stamp, message) not in self._reported:
            self._reported.add((stamp, message))
            logger.error("%s; still signing with key %s", message, self._view.active_kid)
