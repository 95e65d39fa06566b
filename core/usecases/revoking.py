"""Issuer-side revocation, retried with exponential backoff until it succeeds.

The revocation list in the database already makes the credential inactive; this is the call
to the issuer (a no-op for the built-in JWTs, real work for Vault or a broker). It is never
given up: after ``alert_after`` failures the security channel is alerted, the revocation
stays visible (digest, ``requests show``), and a later success clears the alert.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta

from core.facts import Fact, FactKind
from core.issuers.base import IssuerUnavailable
from core.notices import Notices
from core.store import LeasedRevocation
from core.usecases.parts import Parts

logger = logging.getLogger(__name__)

LEASE = timedelta(seconds=60)


class Revoking:
    revoke_alert_after = 3
    revoke_backoff_base_seconds = 1.0
    revoke_backoff_max_seconds = 300.0
    revoke_done_batch = 50  # successes recorded per transaction (well within the lease)

    def __init__(self, parts: Parts) -> None:
        self.parts = parts

    def process_revocations(
        self, *, now: datetime, limit: int = 200, jtis: Sequence[str] | None = None
    ) -> int:
        """Call the issuer for each due revocation (of ``jtis`` only, when given); returns how
        many succeeded."""
        with self.parts.store.write() as tx:
            leased = tx.lease_revocations(now, limit=limit, until=now + LEASE, jtis=jtis)
        succeeded = 0
        done: list[LeasedRevocation] = []  # successes not yet recorded
        for revocation in leased:
            try:
                self._revoke(revocation, now)
            except Exception as exc:  # any failure is retried; the reason is kept, not raised
                self._revocations_done(done, now)  # recorded in the order the calls were made
                done.clear()
                self._revocation_failed(revocation, str(exc) or type(exc).__name__, now)
            else:
                succeeded += 1
                done.append(revocation)
                if len(done) >= self.revoke_done_batch:
                    self._revocations_done(done, now)
                    done.clear()
        self._revocations_done(done, now)
        return succeeded

    def _revoke(self, revocation: LeasedRevocation, now: datetime) -> None:
        if revocation.issuer is None:  # the built-in JWT
            self.parts.issuer.revoke(revocation.jti, now)
            return
        if not revocation.handle:
            raise IssuerUnavailable(f"no handle recorded for issuer {revocation.issuer!r}")
        issuers = self.parts.issuers
        issuers.recorded(revocation.issuer, revocation.issuer_config).revoke(revocation.handle)

    def sweep_orphans(self, now: datetime) -> int:
        """Issuers that can list what they minted (PostgreSQL) drop what has expired: orphans of
        a crash between an issuer's answer and the claim's commit, which no schedule knows.
        Returns how many were dropped; an issuer that fails is logged and tried next sweep."""
        dropped = 0
        for name in self.parts.issuers.names():
            try:
                sweep = getattr(self.parts.issuers.get(name), "sweep_expired", None)
                if sweep is not None:
                    dropped += len(sweep(now))
            except Exception as exc:  # one issuer down must not stop the others
                logger.warning("issuer %s: expired credentials not swept: %s", name, exc)
        return dropped

    def revoke_soon(self, jtis: list[str], now: datetime) -> None:
        """Right after a commit that revoked issuer-backed credentials: call their issuers now
        rather than at the next sweep. A failure is recorded and retried like any other."""
        try:
            self.process_revocations(now=now, jtis=jtis)
        except Exception:  # the sweep retries whatever was not done
            logger.exception("immediate issuer revocation failed; the sweep retries")

    def _revocations_done(self, done: Sequence[LeasedRevocation], now: datetime) -> None:
        """Mark successful issuer calls done, in one transaction and one statement."""
        if not done:
            return
        with self.parts.store.write() as tx:
            marked = tx.revocations_done([r.jti for r in done], now)
            notices = Notices(tx.outbox, now)
            for revocation in done:
                if revocation.jti not in marked:
                    continue
                tx.audit.issuer_revoked(
                    revocation.request_id, revocation.jti, revocation.attempts, now
                )
                if marked[revocation.jti] is not None and self.parts.security_channel:
                    notices.alert(
                        self.parts.security_channel,
                        Fact(
                            FactKind.ISSUER_REVOKE_RECOVERED,
                            revocation.request_id,
                            now,
                            "revoker",
                            {"jti": revocation.jti, "attempts": revocation.attempts},
                        ),
                    )

    def _revocation_failed(self, revocation: LeasedRevocation, error: str, now: datetime) -> None:
        attempts = revocation.attempts
        delay = min(
            self.revoke_backoff_max_seconds, self.revoke_backoff_base_seconds * 2 ** (attempts - 1)
        )
        logger.warning(
            "issuer revoke of %s failed (attempt %d): %s; retry in %.0fs",
            revocation.jti,
            attempts,
            error,
            delay,
        )
        with self.parts.store.write() as tx:
            alerted = tx.revocation_failed(
                revocation.jti,
                error=error,
                retry_at=now + timedelta(seconds=delay),
                alert=attempts >= self.revoke_alert_after,
                now=now,
            )
            if alerted is None:
                return
            tx.audit.issuer_revoke_failed(revocation.request_id, revocation.jti, attempts, now)
            if not alerted:
                return
            if self.parts.security_channel:
                Notices(tx.outbox, now).alert(
                    self.parts.security_channel,
                    Fact(
                        FactKind.ISSUER_REVOKE_FAILING,
                        revocation.request_id,
                        now,
                        "revoker",
                        {"jti": revocation.jti, "attempts": attempts, "error": error[:300]},
                    ),
                )
            else:
                logger.error(
                    "revocation of %s keeps failing and no security channel is set",
                    revocation.jti,
                )
