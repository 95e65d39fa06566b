"""Signed checkpoints: the service key's signature over one entry's (seq, hash).

The hash chain shows that nothing changed *relative to its head*; whoever can write to the
database can rewrite entries, recompute every later hash and move the head, and the chain
still links. A checkpoint is a JWS (``typ: stepup-audit-checkpoint+jwt``) over the seq and
hash of an entry: rewriting or cutting the log at or before that entry would need the
private key. Checkpoints are appended to the chain itself (kind ``audit.checkpoint``, the
entry just after the one they sign), every N entries and every M minutes, and the daily
digest carries the latest, so one copy is held outside the database:
``stepup audit verify --checkpoint JWS`` confirms the database still holds that exact entry.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from core.audit.chain import AuditEntry, iso_utc
from core.audit.signatures import signature_problem
from core.errors import InvalidToken
from core.keys import KeyRing, RejectedToken

CHECKPOINT_TYPE = "stepup-audit-checkpoint+jwt"
CHECKPOINT_ACTOR = "stepup"
_HASH = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """Entry ``seq`` had hash ``hash``, as signed at ``at``; ``signed`` is the JWS itself."""

    seq: int
    hash: str
    at: datetime
    signed: str

    def describe(self) -> str:
        return f"checkpoint of seq {self.seq} signed {iso_utc(self.at)}"


def sign_checkpoint(keyring: KeyRing, *, seq: int, hash: str, at: datetime) -> Checkpoint:
    """A checkpoint of entry ``seq`` (whose hash is ``hash``), signed with the active key."""
    payload = {"seq": seq, "hash": hash, "at": iso_utc(at), "iat": int(at.timestamp())}
    return Checkpoint(seq, hash, at.astimezone(UTC), keyring.sign(payload, typ=CHECKPOINT_TYPE))


def verify_checkpoint(signed: str, keyring: KeyRing) -> Checkpoint:
    """The checkpoint in ``signed`` if a key of ``keyring`` signed it; else ``InvalidToken``."""
    payload = keyring.verify(signed, typ=CHECKPOINT_TYPE)
    seq, digest, at = payload.get("seq"), payload.get("hash"), payload.get("at")
    if not (
        isinstance(seq, int)
        and not isinstance(seq, bool)
        and seq >= 1
        and isinstance(digest, str)
        and _HASH.match(digest)
        and isinstance(at, str)
    ):
        raise RejectedToken("malformed_claim")
    try:
        when = datetime.fromisoformat(at)
    except ValueError:
        raise RejectedToken("malformed_claim") from None
    if when.tzinfo is None:
        raise RejectedToken("malformed_claim")
    return Checkpoint(seq, digest, when.astimezone(UTC), signed)


def checkpoint_data(checkpoint: Checkpoint) -> dict[str, Any]:
    """What a checkpoint entry records: the signed pair in clear (for people and SIEMs) and
    the JWS that vouches for it."""
    return {"seq": checkpoint.seq, "hash": checkpoint.hash, "signed": checkpoint.signed}


def parse_checkpoint_entry(entry: AuditEntry) -> Checkpoint:
    """The checkpoint an entry records, unverified (verification is ``check_checkpoint_entry``)."""
    data = json.loads(entry.data)
    return Checkpoint(int(data["seq"]), str(data["hash"]), entry.at, str(data["signed"]))


def check_checkpoint_entry(entry: AuditEntry, keyring: KeyRing) -> Checkpoint:
    """A checkpoint entry's JWS verifies and signs exactly the entry before it; ValueError
    saying what is wrong otherwise."""
    try:
        data = json.loads(entry.data)
        signed = data["signed"]
        claimed = (data["seq"], data["hash"])
    except (ValueError, KeyError, TypeError):
        raise ValueError("bad checkpoint (not a checkpoint entry's data)") from None
    try:
        checkpoint = verify_checkpoint(signed, keyring)
    except InvalidToken as exc:
        raise ValueError(f"bad checkpoint ({signature_problem(str(signed), exc)})") from None
    if (checkpoint.seq, checkpoint.hash) != claimed:
        raise ValueError("bad checkpoint (the entry's seq and hash are not the signed ones)")
    if (checkpoint.seq, checkpoint.hash) != (entry.seq - 1, entry.prev_hash):
        raise ValueError(
            f"checkpoint signed for entry {checkpoint.seq} with hash {checkpoint.hash}, but the "
            f"entry before it is {entry.seq - 1} with hash {entry.prev_hash}: the log before "
            "this checkpoint was rewritten"
        )
    return checkpoint


@dataclass(frozen=True, slots=True)
class CheckpointSchedule:
    """Signs a checkpoint whenever a write carries the chain past a multiple of ``every``
    entries (0: never). Given to the store, which asks ``due`` under the head lock."""

    keyring: KeyRing
    every: int

    def due(self, before: int, after: int) -> bool:
        """Whether the entries ``before + 1 .. after`` just chained cross a multiple of N."""
        return self.every > 0 and after // self.every > before // self.every
