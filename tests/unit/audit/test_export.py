"""Export lines (pure): each re-hashes to the stored entry; a bad line is named."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from core.audit.chain import GENESIS_HASH, AuditEntry, entry_hash
from core.audit.export import ExportUnreadable, export_line, read_export, verify_export
from core.errors import AuditChainBroken
from core.keys import KeyRing

T0 = datetime(2026, 3, 1, tzinfo=UTC)
# Stored texts as another writer may have left them: not in canonical form, non-ASCII,
# numbers that JSON parsers may rewrite.
DATA = ['{"n":1}', '{"b":1, "a":2}', '{"note":"déploiement ✓","x":1.0}', '{"big":1e400}']


def chain(texts: list[str]) -> list[AuditEntry]:
    entries, prev = [], GENESIS_HASH
    for seq, data in enumerate(texts, start=1):
        at = T0 + timedelta(seconds=seq, microseconds=seq)
        fields = {
            "seq": seq,
            "at": at,
            "kind": "agent.added",
            "request_id": None,
            "actor": "t",
            "data": data,
            "prev_hash": prev,
        }
        prev = entry_hash(**fields)  # type: ignore[arg-type]
        entries.append(AuditEntry(hash=prev, **fields))  # type: ignore[arg-type]
    return entries


def test_every_line_reads_back_as_the_entry_it_was() -> None:
    entries = chain(DATA[:3])
    lines = [export_line(e) for e in entries]
    assert "data_text" not in json.loads(lines[0])
    assert json.loads(lines[1])["data_text"] == '{"b":1, "a":2}'  # kept: it is what was hashed
    assert list(read_export(lines)) == entries


def test_a_line_whose_data_and_data_text_disagree_is_refused() -> None:
    record = json.loads(export_line(chain(DATA[:2])[1]))
    record["data"] = {"a": 2, "b": 99}
    with pytest.raises(ExportUnreadable, match="line 2: not an audit entry"):
        list(read_export(["\n", json.dumps(record)]))


@pytest.mark.parametrize(
    "line",
    ['{"seq": "1"}', "[]", '{"seq": 1, "at": "2026-03-01T00:00:00"}', "{"],
)
def test_a_line_that_is_not_an_entry_is_named(line: str) -> None:
    with pytest.raises(ExportUnreadable, match="line 1: "):
        list(read_export([line]))


def test_an_export_from_the_middle_verifies_from_its_first_link(tmp_path: Path) -> None:
    ring = KeyRing.load_or_create(tmp_path / "keys")
    entries = chain(DATA)
    whole = verify_export([export_line(e) for e in entries], ring)
    assert (whole.starts_mid_chain, whole.chain.entries) == (False, 4)
    tail = verify_export([export_line(e) for e in entries[2:]], ring)
    assert (tail.starts_mid_chain, tail.first_seq, tail.first_prev_hash) == (
        True,
        3,
        entries[1].hash,
    )
    assert tail.chain.head_hash == entries[-1].hash
    # A first line that says it is the chain's first must link to the genesis.
    first = entries[0]
    fields = {
        "seq": 1,
        "at": first.at,
        "kind": first.kind,
        "request_id": None,
        "actor": first.actor,
        "data": first.data,
        "prev_hash": "ff" * 32,
    }
    unlinked = AuditEntry(hash=entry_hash(**fields), **fields)  # type: ignore[arg-type]
    with pytest.raises(AuditChainBroken, match="entry 1: does not link"):
        verify_export([export_line(unlinked)], ring)
    empty = verify_export([], ring)
    assert (empty.first_seq, empty.chain.entries) == (None, 0)
