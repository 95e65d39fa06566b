"""Signed checkpoints (pure): the JWS, the entry that records one, when one is due."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import jwt
import pytest

from core.audit.chain import GENESIS_HASH, AuditEntry, entry_hash
from core.audit.checkpoints import (
    CHECKPOINT_TYPE,
    CheckpointSchedule,
    check_checkpoint_entry,
    checkpoint_data,
    sign_checkpoint,
    verify_checkpoint,
)
from core.audit.verification import Anchoring, anchoring_note
from core.canonical import canonical_json
from core.decisions import DECISION_TYPE
from core.errors import InvalidToken
from core.keys import KeyRing

T0 = datetime(2026, 3, 1, 12, 0, 0, 7, tzinfo=UTC)
HASH = "ab" * 32


@pytest.fixture
def ring(tmp_path: Path) -> KeyRing:
    return KeyRing.load_or_create(tmp_path / "keys")


def test_a_checkpoint_round_trips(ring: KeyRing) -> None:
    checkpoint = sign_checkpoint(ring, seq=41, hash=HASH, at=T0)
    assert jwt.get_unverified_header(checkpoint.signed)["typ"] == CHECKPOINT_TYPE
    assert verify_checkpoint(checkpoint.signed, ring) == checkpoint
    assert checkpoint.describe() == "checkpoint of seq 41 signed 2026-03-01T12:00:00.000007+00:00"


def test_another_signed_object_is_not_a_checkpoint(ring: KeyRing) -> None:
    """A decision (or any JWS of ours) with the same claims cannot pass for a checkpoint."""
    disguised = ring.sign({"seq": 41, "hash": HASH, "at": T0.isoformat()}, typ=DECISION_TYPE)
    with pytest.raises(InvalidToken):
        verify_checkpoint(disguised, ring)


@pytest.mark.parametrize(
    "payload",
    [
        {"seq": True, "hash": HASH, "at": "2026-03-01T12:00:00+00:00"},
        {"seq": 0, "hash": HASH, "at": "2026-03-01T12:00:00+00:00"},
        {"seq": 4, "hash": "AB" * 32, "at": "2026-03-01T12:00:00+00:00"},
        {"seq": 4, "hash": HASH, "at": "2026-03-01T12:00:00"},
        {"seq": 4, "hash": HASH},
    ],
)
def test_a_malformed_checkpoint_is_refused(ring: KeyRing, payload: dict[str, object]) -> None:
    with pytest.raises(InvalidToken):
        verify_checkpoint(ring.sign(payload, typ=CHECKPOINT_TYPE), ring)


def checkpoint_entry(ring: KeyRing, *, signs: tuple[int, str], seq: int, prev: str) -> AuditEntry:
    checkpoint = sign_checkpoint(ring, seq=signs[0], hash=signs[1], at=T0)
    data = canonical_json(checkpoint_data(checkpoint))
    fields = {
        "seq": seq,
        "at": T0,
        "kind": "audit.checkpoint",
        "request_id": None,
        "actor": "stepup",
        "data": data,
        "prev_hash": prev,
    }
    return AuditEntry(hash=entry_hash(**fields), **fields)  # type: ignore[arg-type]


def test_a_checkpoint_entry_signs_the_entry_before_it(ring: KeyRing) -> None:
    good = checkpoint_entry(ring, signs=(6, HASH), seq=7, prev=HASH)
    assert check_checkpoint_entry(good, ring).seq == 6
    moved = checkpoint_entry(ring, signs=(6, HASH), seq=6, prev=GENESIS_HASH)
    with pytest.raises(ValueError, match="checkpoint signed for entry 6 with hash abab") as info:
        check_checkpoint_entry(moved, ring)
    assert "the entry before it is 5 with hash 0000" in str(info.value)


def test_a_checkpoint_entry_whose_clear_text_differs_from_its_signature(ring: KeyRing) -> None:
    entry = checkpoint_entry(ring, signs=(6, HASH), seq=7, prev=HASH)
    data = canonical_json(
        {
            "seq": 6,
            "hash": "cd" * 32,
            "signed": sign_checkpoint(ring, seq=6, hash=HASH, at=T0).signed,
        }
    )
    with pytest.raises(ValueError, match="the entry's seq and hash are not the signed ones"):
        check_checkpoint_entry(AuditEntry(7, T0, entry.kind, None, "stepup", data, HASH, ""), ring)


def test_a_checkpoint_by_an_unknown_key_names_it(ring: KeyRing, tmp_path: Path) -> None:
    other = KeyRing.load_or_create(tmp_path / "other")
    entry = checkpoint_entry(other, signs=(6, HASH), seq=7, prev=HASH)
    with pytest.raises(ValueError, match=f"signed by key '{other.active_kid}', which is not"):
        check_checkpoint_entry(entry, ring)


@pytest.mark.parametrize(
    ("every", "before", "after", "due"),
    [
        (1000, 0, 999, False),
        (1000, 0, 1000, True),
        (1000, 999, 1000, True),
        (1000, 1000, 1001, False),
        (1000, 1000, 1999, False),
        (1000, 1500, 2600, True),  # one checkpoint for a write that passes a multiple, or two
        (1, 5, 6, True),
        (0, 0, 10**9, False),  # off
    ],
)
def test_when_a_checkpoint_is_due(
    ring: KeyRing, every: int, before: int, after: int, due: bool
) -> None:
    assert CheckpointSchedule(ring, every).due(before, after) is due


def test_what_is_not_yet_anchored_is_said() -> None:
    def anchoring(last: int | None, unanchored: int) -> Anchoring:
        return Anchoring(0, 0 if last is None else 1, last, unanchored, (), ())

    assert anchoring_note(anchoring(40, 0)) is None
    assert anchoring_note(anchoring(40, 3)) == (
        "not yet anchored: 3 entries after seq 40 (the last checkpoint)"
    )
    assert anchoring_note(anchoring(None, 9)) is not None
    assert "9 entries, no checkpoint yet" in str(anchoring_note(anchoring(None, 9)))
