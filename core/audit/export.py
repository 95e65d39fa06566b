"""The audit log as JSON Lines, and verifying such an export with public keys alone.

One line per entry: ``seq``, ``at`` (ISO 8601 UTC to the microsecond, the exact hashed text),
``kind``, ``request_id``, ``actor``, ``data`` (the entry's JSON, parsed, for a SIEM),
``prev_hash`` and ``hash``. The hash covers the data as stored; ``canonical_json(data)``
reproduces that text, so anyone can re-hash a line. Should it not (data stored by another
writer in another form), the line also carries ``data_text``, the exact text.

An export made with ``--since`` starts mid-chain: it is verified from its first entry's own
``prev_hash``, and the report says so (nothing before that entry is covered).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from itertools import chain
from typing import Any

from core.audit.chain import GENESIS_HASH, AuditEntry, ChainReport, iso_utc, verify_chain
from core.audit.checkpoints import Checkpoint
from core.audit.verification import Anchoring, LogChecks
from core.canonical import canonical_json
from core.errors import StepupError
from core.keys import KeyRing


class ExportUnreadable(StepupError):
    """A line of an export is not an entry; ``detail`` names the line."""

    title = "Unreadable export"


def export_record(entry: AuditEntry) -> dict[str, Any]:
    """One entry as one export line's object."""
    data = json.loads(entry.data)
    record: dict[str, Any] = {
        "seq": entry.seq,
        "at": iso_utc(entry.at),
        "kind": entry.kind,
        "request_id": entry.request_id,
        "actor": entry.actor,
        "data": data,
        "prev_hash": entry.prev_hash,
        "hash": entry.hash,
    }
    if canonical_json(data) != entry.data:
        record["data_text"] = entry.data
    return record


def export_line(entry: AuditEntry) -> str:
    return json.dumps(export_record(entry), sort_keys=True) + "\n"


def read_export(lines: Iterable[str]) -> Iterator[AuditEntry]:
    """The entries of an export, in file order; ExportUnreadable naming the first bad line."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            yield _entry(json.loads(line))
        except (ValueError, TypeError, KeyError) as exc:
            raise ExportUnreadable(f"line {number}: not an audit entry ({exc})") from None


def _entry(record: Any) -> AuditEntry:
    if not isinstance(record, dict):
        raise TypeError("not a JSON object")
    seq = record["seq"]
    if not isinstance(seq, int) or isinstance(seq, bool):
        raise TypeError("seq is not an integer")
    at = datetime.fromisoformat(_text(record, "at"))
    if at.tzinfo is None:
        raise ValueError("at has no time zone")
    data_text = record.get("data_text")
    if data_text is None:
        data_text = canonical_json(record["data"])
    elif not isinstance(data_text, str) or canonical_json(json.loads(data_text)) != canonical_json(
        record["data"]
    ):
        raise ValueError("data_text and data differ")
    return AuditEntry(
        seq=seq,
        at=at,
        kind=_text(record, "kind"),
        request_id=_optional_text(record, "request_id"),
        actor=_optional_text(record, "actor"),
        data=data_text,
        prev_hash=_text(record, "prev_hash"),
        hash=_text(record, "hash"),
    )


def _text(record: dict[str, Any], name: str) -> str:
    value = record[name]
    if not isinstance(value, str):
        raise TypeError(f"{name} is not a string")
    return value


def _optional_text(record: dict[str, Any], name: str) -> str | None:
    return None if record.get(name) is None else _text(record, name)


@dataclass(frozen=True, slots=True)
class ExportVerification:
    chain: ChainReport
    anchoring: Anchoring
    first_seq: int | None  # None for an empty export
    starts_mid_chain: bool  # its first entry is not the chain's first (an export --since)
    first_prev_hash: str


def verify_export(
    lines: Iterable[str], keyring: KeyRing, *, anchors: Iterable[Checkpoint] = ()
) -> ExportVerification:
    """Verify an export's chain, signed decisions and checkpoints with ``keyring`` (public
    keys only); AuditChainBroken naming the first bad entry, ExportUnreadable a bad line.

    There is no head to compare with: entries cut from the end of a file are only caught by
    a checkpoint held elsewhere (``anchors``); the report says how many follow the last
    checkpoint inside the export."""
    entries = read_export(lines)
    first = next(entries, None)
    if first is None:
        start = (1, GENESIS_HASH)
        walk: Iterable[AuditEntry] = ()
    else:
        start = (first.seq, first.prev_hash if first.seq > 1 else GENESIS_HASH)
        walk = chain([first], entries)
    checks = LogChecks(keyring, anchors)
    report = verify_chain(walk, head=None, check_signature=checks, start=start)
    return ExportVerification(
        chain=report,
        anchoring=checks.finish(report),
        first_seq=first.seq if first is not None else None,
        starts_mid_chain=first is not None and first.seq > 1,
        first_prev_hash=start[1],
    )
