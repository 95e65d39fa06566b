"""Each kind of tampering is caught, and named by the first bad entry."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from core.audit.chain import GENESIS_HASH, AuditEntry, entry_hash, verify_chain
from core.errors import AuditChainBroken

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def build(n: int) -> list[AuditEntry]:
    entries, prev = [], GENESIS_HASH
    for seq in range(1, n + 1):
        fields = {
            "seq": seq,
            "at": T0 + timedelta(seconds=seq),
            "kind": "intent.submitted",
            "request_id": f"req_{seq}",
            "actor": "agent",
            "data": f'{{"n":{seq}}}',
            "prev_hash": prev,
        }
        digest = entry_hash(**fields)  # type: ignore[arg-type]
        entries.append(AuditEntry(hash=digest, **fields))  # type: ignore[arg-type]
        prev = digest
    return entries


def head_of(entries: list[AuditEntry]) -> tuple[int, str]:
    return entries[-1].seq, entries[-1].hash


def test_clean_chain_verifies() -> None:
    chain = build(50)
    report = verify_chain(chain, head=head_of(chain))
    assert (report.entries, report.head_seq, report.head_hash) == (50, 50, chain[-1].hash)


def test_empty_chain_is_intact() -> None:
    assert verify_chain([], head=(0, GENESIS_HASH)).entries == 0


def broken_at(entries: list[AuditEntry], head: tuple[int, str]) -> int:
    with pytest.raises(AuditChainBroken) as info:
        verify_chain(entries, head=head)
    return info.value.seq


@pytest.mark.parametrize("field", ["data", "kind", "actor", "request_id", "at"])
def test_modified_field(field: str) -> None:
    chain = build(10)
    head = head_of(chain)
    value = T0 if field == "at" else "tampered"
    chain[4] = replace(chain[4], **{field: value})
    assert broken_at(chain, head) == 5


def test_modified_and_rehashed_entry_breaks_the_next_link() -> None:
    chain = build(10)
    head = head_of(chain)
    e = replace(chain[4], data='{"n":999}')
    chain[4] = replace(
        e,
        hash=entry_hash(
            seq=e.seq,
            at=e.at,
            kind=e.kind,
            request_id=e.request_id,
            actor=e.actor,
            data=e.data,
            prev_hash=e.prev_hash,
        ),
    )
    assert broken_at(chain, head) == 6


def test_deleted_entry() -> None:
    chain = build(10)
    head = head_of(chain)
    del chain[3]
    assert broken_at(chain, head) == 4


def test_deleted_tail_is_caught_by_the_head() -> None:
    chain = build(10)
    head = head_of(chain)
    assert broken_at(chain[:8], head) == 9


def test_inserted_entry() -> None:
    chain = build(10)
    head = head_of(chain)
    forged = replace(chain[3], data='{"forged":true}')
    chain.insert(4, forged)
    assert broken_at(chain, head) == 4


def test_reordered_entries() -> None:
    chain = build(10)
    head = head_of(chain)
    chain[2], chain[3] = chain[3], chain[2]
    assert broken_at(chain, head) == 3


def test_bad_signature_is_named() -> None:
    chain = build(5)

    def check(entry: AuditEntry) -> None:
        if entry.seq == 3:
            raise ValueError("signature invalid")

    with pytest.raises(AuditChainBroken) as info:
        verify_chain(chain, head=head_of(chain), check_signature=check)
    assert info.value.seq == 3
    assert "signature" in info.value.detail
