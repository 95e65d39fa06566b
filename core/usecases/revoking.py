"""Issuer-side revocation, retried with exponential backoff until it succeeds.

The revocation list in the database already makes the credential inactive; this is the call
to the issuer (a no-op for the built-in JWTs, real work for Vault or a broker). It is never
given up: after ``alert_after`` failures the security channel is alerted, the row stays
visible (digest, ``requests show``), and a later success clears the alert.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import select, update

from core.audit.events import AuditLog
from core.notices import Notices
from core.storage.audit_store import SqlAuditAppender
from core.storage.tables import RevocationRow
from core.usecases.base import StepupBase

logger = logging.getLogger(__name__)

LEASE = timedelta(seconds=60)


class Revoking(StepupBase):
    revoke_alert_after = 3
    revoke_backoff_base_seconds = 1.0
    revoke_backoff_max_seconds = 300.0
    revoke_done_batch = 50  # successes recorded per transaction (well within the lease)

    def _claim_revocations(self, now: datetime, limit: int) -> list[tuple[str, str, int]]:
        with self.db.write() as session:
            rows = list(
                session.execute(
                    select(RevocationRow)
                    .where(RevocationRow.status == "pending", RevocationRow.next_attempt_at <= now)
                    .order_by(RevocationRow.next_attempt_at)
                    .limit(limit)
                    .with_for_update(skip_locked=True)
                ).scalars()
            )
            for row in rows:  # leased: another worker or replica leaves them alone
                row.next_attempt_at = now + LEASE
                row.attempts += 1
            return [(r.jti, r.request_id, r.attempts) for r in rows]

    def process_revocations(self, *, now: datetime, limit: int = 200) -> int:
        """Call the issuer for each due revocation; returns how many succeeded."""
        succeeded = 0
        done: list[tuple[str, str, int]] = []  # successes not yet recorded
        for jti, request_id, attempts in self._claim_revocations(now, limit):
            try:
                self.issuer.revoke(jti, now)
            except Exception as exc:  # any failure is retried; the reason is kept, not raised
                self._revocations_done(done, now)  # recorded in the order the calls were made
                done.clear()
                self._revocation_failed(
                    jti, request_id, attempts, str(exc) or type(exc).__name__, now
                )
            else:
                succeeded += 1
                done.append((jti, request_id, attempts))
                if len(done) >= self.revoke_done_batch:
                    self._revocations_done(done, now)
                    done.clear()
        self._revocations_done(done, now)
        return succeeded

    def _revocations_done(self, done: Sequence[tuple[str, str, int]], now: datetime) -> None:
        """Mark successful issuer calls done, in one transaction and one statement."""
        if not done:
            return
        with self.db.write() as session:
            marked: dict[str, datetime | None] = dict(
                session.execute(
                    update(RevocationRow)
                    .where(
                        RevocationRow.jti.in_([jti for jti, _, _ in done]),
                        RevocationRow.status != "done",
                    )
                    .values(status="done", done_at=now, last_error=None)
                    .returning(RevocationRow.jti, RevocationRow.alerted_at)
                    .execution_options(synchronize_session=False)
                ).all()
            )
            audit = AuditLog(SqlAuditAppender(session))
            for jti, request_id, attempts in done:
                if jti not in marked:
                    continue
                audit.issuer_revoked(request_id, jti, attempts, now)
                if marked[jti] is not None and self.security_channel:
                    Notices(session, now).channel(
                        request_id,
                        self.security_channel,
                        f":white_check_mark: Revocation of credential `{jti}` (request "
                        f"`{request_id}`) succeeded after {attempts} attempts. Alert cleared.",
                    )

    def _revocation_failed(
        self, jti: str, request_id: str, attempts: int, error: str, now: datetime
    ) -> None:
        delay = min(
            self.revoke_backoff_max_seconds, self.revoke_backoff_base_seconds * 2 ** (attempts - 1)
        )
        logger.warning(
            "issuer revoke of %s failed (attempt %d): %s; retry in %.0fs",
            jti,
            attempts,
            error,
            delay,
        )
        with self.db.write() as session:
            row = session.get(RevocationRow, jti)
            if row is None or row.status == "done":
                return
            row.next_attempt_at = now + timedelta(seconds=delay)
            row.last_error = error[:2000]
            AuditLog(SqlAuditAppender(session)).issuer_revoke_failed(request_id, jti, attempts, now)
            if attempts >= self.revoke_alert_after and row.alerted_at is None:
                row.alerted_at = now
                if self.security_channel:
                    Notices(session, now).channel(
                        request_id,
                        self.security_channel,
                        f":rotating_light: Revoking credential `{jti}` (request `{request_id}`) "
                        f"at its issuer has failed {attempts} times: {error[:300]}. The "
                        "revocation list already refuses it; stepup keeps retrying until the "
                        "issuer confirms.",
                    )
                else:
                    logger.error(
                        "revocation of %s keeps failing and no security channel is set", jti
                    )
