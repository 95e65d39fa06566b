"""Hashing and verification of the audit chain, independent of any database.

Each entry's hash is SHA-256 over its own fields and the previous entry's hash, so changing,
deleting, inserting or reordering an entry breaks every link after it. The head (last seq and
hash) is kept apart from the entries, so deleting entries at the end is caught too; signed
checkpoints (``core/audit/checkpoints.py``) anchor it outside the database.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from core.errors import AuditChainBroken

GENESIS_HASH = "0" * 64


@dataclass(frozen=True, slots=True)
class AuditEntry:
    seq: int
    at: datetime
    kind: str
    request_id: str | None
    actor: str | None
    data: str  # canonical JSON, hashed exactly as stored
    prev_hash: str
    hash: str


def iso_utc(at: datetime) -> str:
    """ISO 8601 in UTC to the microsecond: the exact text hashed into an entry (and exported)."""
    return at.astimezone(UTC).isoformat(timespec="microseconds")


def entry_hash(
    *,
    seq: int,
    at: datetime,
    kind: str,
    request_id: str | None,
    actor: str | None,
    data: str,
    prev_hash: str,
) -> str:
    # Fields are length-prefixed so that no shift of text between fields yields the same bytes:
    # "len:text;" for seq, time, kind, request id, actor, data and previous hash, in that order.
    # Spelled out rather than joined in a loop: verification speed is dominated by this line.
    number, time = str(seq), iso_utc(at)
    request_id, actor = request_id or "", actor or ""
    material = (
        f"{len(number)}:{number};{len(time)}:{time};{len(kind)}:{kind};"
        f"{len(request_id)}:{request_id};{len(actor)}:{actor};{len(data)}:{data};"
        f"{len(prev_hash)}:{prev_hash};"
    )
    return hashlib.sha256(material.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class ChainReport:
    entries: int
    head_seq: int
    head_hash: str


EntryCheck = Callable[[AuditEntry], None]
"""Raises on an entry whose content is wrong beyond its hash (a signed decision or checkpoint
that does not verify); the exception's text says what, and the entry is named with it."""
SignatureCheck = EntryCheck


def verify_chain(
    entries: Iterable[AuditEntry],
    *,
    head: tuple[int, str] | None,
    check_signature: EntryCheck | None = None,
    start: tuple[int, str] = (1, GENESIS_HASH),
) -> ChainReport:
    """Walk ``entries`` in seq order; raise AuditChainBroken naming the first bad entry.

    ``start`` is the first entry's seq and the hash it must link to: the genesis for a whole
    chain, or what an export that begins mid-chain says of its first entry.
    """
    expected_seq, prev = start
    count = 0
    for entry in entries:
        if entry.seq != expected_seq:
            if entry.seq > expected_seq:
                raise AuditChainBroken(
                    "missing (deleted entry before this point)", seq=expected_seq
                )
            raise AuditChainBroken("out of order", seq=entry.seq)
        if entry.prev_hash != prev:
            raise AuditChainBroken("does not link to the previous entry's hash", seq=entry.seq)
        recomputed = entry_hash(
            seq=entry.seq,
            at=entry.at,
            kind=entry.kind,
            request_id=entry.request_id,
            actor=entry.actor,
            data=entry.data,
            prev_hash=entry.prev_hash,
        )
        if recomputed != entry.hash:
            raise AuditChainBroken("content was modified (hash mismatch)", seq=entry.seq)
        if check_signature is not None:
            try:
                check_signature(entry)
            except Exception as exc:  # any failure is a broken chain, named by entry
                raise AuditChainBroken(str(exc) or type(exc).__name__, seq=entry.seq) from exc
        prev = entry.hash
        expected_seq += 1
        count += 1
    last_seq = expected_seq - 1
    if head is not None:
        head_seq, head_hash = head
        if head_seq > last_seq:
            raise AuditChainBroken(
                f"missing (the head records {head_seq} entries, {last_seq} found)",
                seq=last_seq + 1,
            )
        if head_seq < last_seq:
            raise AuditChainBroken(
                "appended outside stepup (beyond the recorded head)", seq=head_seq + 1
            )
        if head_hash != prev:
            raise AuditChainBroken("does not match the recorded head hash", seq=last_seq)
    return ChainReport(entries=count, head_seq=last_seq, head_hash=prev)
