"""What verifying the log checks on each entry beyond its hash, and how far it is anchored.

``LogChecks`` is the entry check ``verify_chain`` runs: every signed decision and every
checkpoint entry must verify with the public keys, and every checkpoint held outside the
database (``--checkpoint``, e.g. from a digest) must find its exact entry. ``finish`` then
says how much of the log no checkpoint covers yet, and fails for an outside checkpoint whose
entry is gone (the log was cut short).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from core.audit.chain import AuditEntry, ChainReport
from core.audit.checkpoints import Checkpoint, check_checkpoint_entry
from core.audit.events import AuditKind
from core.audit.signatures import decision_signature_check
from core.errors import AuditChainBroken
from core.keys import KeyRing

_DECISION = AuditKind.DECISION_RECORDED.value
_CHECKPOINT = AuditKind.AUDIT_CHECKPOINT.value


@dataclass(frozen=True, slots=True)
class Anchoring:
    decisions: int  # signed decisions verified
    checkpoints: int  # checkpoint entries verified
    last_checkpoint_seq: int | None  # the last checkpoint entry, None when there is none
    unanchored: int  # entries after the last checkpoint entry (all of them without one)
    confirmed: tuple[Checkpoint, ...]  # outside checkpoints whose entry the log holds
    before_start: tuple[Checkpoint, ...]  # outside checkpoints older than the first entry


class LogChecks:
    """Called with each entry, in order, by ``verify_chain``; raises on the first bad one."""

    def __init__(self, keyring: KeyRing | None, anchors: Iterable[Checkpoint] = ()) -> None:
        self._keyring = keyring
        self._decision_check = decision_signature_check(keyring) if keyring else None
        self._anchors: dict[int, list[Checkpoint]] = defaultdict(list)
        for anchor in anchors:
            self._anchors[anchor.seq].append(anchor)
        self._confirmed: list[Checkpoint] = []
        self._first_seq: int | None = None
        self._decisions = 0
        self._checkpoints = 0
        self._last_checkpoint_seq: int | None = None

    def __call__(self, entry: AuditEntry) -> None:
        if self._first_seq is None:
            self._first_seq = entry.seq
        kind = entry.kind
        if kind == _DECISION:
            if self._decision_check is None:
                raise ValueError("cannot check its decision signature: no public keys")
            self._decision_check(entry)
            self._decisions += 1
        elif kind == _CHECKPOINT:
            if self._keyring is None:
                raise ValueError("cannot check its checkpoint signature: no public keys")
            check_checkpoint_entry(entry, self._keyring)
            self._checkpoints += 1
            self._last_checkpoint_seq = entry.seq
        if self._anchors:
            for anchor in self._anchors.pop(entry.seq, ()):
                if anchor.hash != entry.hash:
                    raise ValueError(
                        f"does not match the {anchor.describe()} (hash {anchor.hash}, the "
                        f"database has {entry.hash}): the log up to here was rewritten"
                    )
                self._confirmed.append(anchor)

    def finish(self, report: ChainReport) -> Anchoring:
        """After the walk: the anchoring, or AuditChainBroken for an outside checkpoint whose
        entry lies beyond the end of the log."""
        first = self._first_seq if self._first_seq is not None else report.head_seq + 1
        before = sorted(
            (a for seq, group in self._anchors.items() if seq < first for a in group),
            key=lambda a: a.seq,
        )
        beyond = sorted(
            (a for seq, group in self._anchors.items() if seq >= first for a in group),
            key=lambda a: a.seq,
        )
        if beyond:
            anchor = beyond[0]
            raise AuditChainBroken(
                f"missing: the {anchor.describe()} holds entry {anchor.seq}, but the log ends "
                f"at {report.head_seq} (entries were removed)",
                seq=report.head_seq + 1,
            )
        last = self._last_checkpoint_seq
        return Anchoring(
            decisions=self._decisions,
            checkpoints=self._checkpoints,
            last_checkpoint_seq=last,
            unanchored=report.head_seq - last if last is not None else report.entries,
            confirmed=tuple(self._confirmed),
            before_start=tuple(before),
        )


def anchoring_note(anchoring: Anchoring) -> str | None:
    """The warning for entries no checkpoint covers yet; None when the last entry is one."""
    if anchoring.unanchored <= 0:
        return None
    if anchoring.last_checkpoint_seq is None:
        return (
            f"not yet anchored: {anchoring.unanchored} entries, no checkpoint yet (a checkpoint "
            "is written every N entries, every M minutes and with each daily digest)"
        )
    return (
        f"not yet anchored: {anchoring.unanchored} entries after seq "
        f"{anchoring.last_checkpoint_seq} (the last checkpoint)"
    )
