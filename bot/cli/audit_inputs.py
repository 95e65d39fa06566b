"""What ``stepup audit verify`` is given besides the database: public keys and checkpoints."""

from __future__ import annotations

import json
import re
from pathlib import Path

from bot.cli.common import fail
from core.audit.checkpoints import Checkpoint, verify_checkpoint
from core.audit.keyset import keyring_from_jwks
from core.audit.signatures import signature_problem
from core.errors import ConfigError, InvalidToken
from core.keys import KeyRing

JWKS_TIMEOUT_SECONDS = 10.0
_COMPACT_JWS = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$")


def load_jwks(source: str) -> KeyRing:
    """A verification-only ring from a JWKS file, or from an http(s) URL."""
    if source.startswith(("https://", "http://")):
        import httpx

        try:
            response = httpx.get(source, timeout=JWKS_TIMEOUT_SECONDS, follow_redirects=False)
            response.raise_for_status()
            document = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise fail(f"cannot fetch the JWKS at {source}: {exc}") from None
    else:
        try:
            document = json.loads(Path(source).read_text(encoding="utf-8"))
        except OSError as exc:
            raise fail(f"cannot read the JWKS {source}: {exc.strerror or exc}") from None
        except ValueError:
            raise fail(f"{source} is not JSON (a JWKS is expected)") from None
    try:
        return keyring_from_jwks(document)
    except ConfigError as exc:
        raise fail(f"unusable JWKS {source}: {exc.detail}") from None


def checkpoint_texts(values: list[str]) -> list[str]:
    """Each ``--checkpoint`` value is a checkpoint JWS, or a file of them (one a line, blank
    lines and ``#`` comments skipped)."""
    texts: list[str] = []
    for value in values:
        if _COMPACT_JWS.match(value.strip()):
            texts.append(value.strip())
            continue
        try:
            lines = Path(value).read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise fail(
                f"--checkpoint {value[:40]!r} is neither a checkpoint nor a readable file "
                f"({exc.strerror or exc})"
            ) from None
        texts += [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    return texts


def load_checkpoints(values: list[str], keyring: KeyRing | None) -> list[Checkpoint]:
    """The checkpoints given, each verified with ``keyring``; exit 1 naming a bad one."""
    texts = checkpoint_texts(values)
    if texts and keyring is None:
        raise fail("checkpoints were given but there are no public keys to check them with")
    checkpoints: list[Checkpoint] = []
    for number, text in enumerate(texts, start=1):
        assert keyring is not None
        try:
            checkpoints.append(verify_checkpoint(text, keyring))
        except InvalidToken as exc:
            raise fail(
                f"checkpoint {number} given is not a valid checkpoint of this service "
                f"({signature_problem(text, exc)})"
            ) from None
    return checkpoints
