"""``stepup trust``: the trusted issuers of workload tokens, added and removed with an audit
entry in the same transaction (docs/identity.md)."""

from __future__ import annotations

import hashlib
from datetime import datetime

from core.audit.events import AuditLog
from core.errors import ValidationFailed
from core.identity.trust import (
    TrustedIssuer,
    TrustKind,
    checked_audience,
    checked_bundle,
    checked_name,
    checked_trust_domain,
    checked_url,
)
from core.identity.workload import WorkloadVerifier
from core.storage import identity_repo
from core.storage.audit_store import SqlAuditAppender
from core.storage.database import Database


class TrustRegistry:
    def __init__(self, db: Database, verifier: WorkloadVerifier | None = None) -> None:
        self.db = db
        self.verifier = verifier  # told at once of a change made in this process

    def add_oidc(
        self,
        name: str,
        *,
        issuer: str,
        audience: str,
        jwks_uri: str | None = None,
        by: str,
        now: datetime,
        replace: bool = False,
    ) -> TrustedIssuer:
        """An OIDC provider: tokens whose ``iss`` is exactly ``issuer``; keys from
        ``jwks_uri``, else from its discovery document."""
        trusted = TrustedIssuer(
            name=checked_name(name),
            kind=TrustKind.OIDC,
            issuer=checked_url(issuer, "issuer"),
            audience=checked_audience(audience),
            jwks_uri=None if jwks_uri is None else checked_url(jwks_uri, "jwks_uri"),
        )
        return self._add(trusted, by=by, now=now, replace=replace)

    def add_spiffe(
        self,
        trust_domain: str,
        *,
        audience: str,
        bundle: str | None = None,
        jwks_uri: str | None = None,
        by: str,
        now: datetime,
        replace: bool = False,
    ) -> TrustedIssuer:
        """A SPIFFE trust domain: JWT-SVIDs whose ``sub`` is one of its SPIFFE IDs, signed by
        a key of its bundle (the file's content) or of ``jwks_uri`` — exactly one of them."""
        if (bundle is None) == (jwks_uri is None):
            raise ValidationFailed("give either a bundle or a jwks_uri")
        domain = checked_trust_domain(trust_domain)
        trusted = TrustedIssuer(
            name=domain,
            kind=TrustKind.SPIFFE,
            issuer=f"spiffe://{domain}",
            audience=checked_audience(audience),
            jwks_uri=None if jwks_uri is None else checked_url(jwks_uri, "jwks_uri"),
            jwks=None if bundle is None else checked_bundle(bundle),
        )
        return self._add(trusted, by=by, now=now, replace=replace)

    def _add(
        self, trusted: TrustedIssuer, *, by: str, now: datetime, replace: bool
    ) -> TrustedIssuer:
        with self.db.write() as session:
            replaced = identity_repo.add_trusted_issuer(
                session, trusted, by=by, now=now, replace=replace
            )
            AuditLog(SqlAuditAppender(session)).trust_added(
                trusted.name, describe(trusted), by, now, replaced=replaced
            )
        self._changed()
        return trusted

    def remove(self, name: str, *, by: str, now: datetime) -> int:
        """Its tokens stop authenticating; returns how many agent identities were unbound."""
        with self.db.write() as session:
            unbound = identity_repo.remove_trusted_issuer(session, name)
            AuditLog(SqlAuditAppender(session)).trust_removed(name, by, now, unbound=unbound)
        self._changed()
        return unbound

    def list(self) -> list[TrustedIssuer]:
        with self.db.read() as session:
            return identity_repo.trusted_issuers(session)

    def _changed(self) -> None:
        if self.verifier is not None:
            self.verifier.reload()


def describe(trusted: TrustedIssuer) -> dict[str, str | None]:
    """What ``trust list --json`` shows and the audit records: never a bundle itself (its
    SHA-256 instead)."""
    return {
        "kind": trusted.kind.value,
        "issuer": trusted.issuer,
        "audience": trusted.audience,
        "jwks_uri": trusted.jwks_uri,
        "bundle_sha256": None
        if trusted.jwks is None
        else hashlib.sha256(trusted.jwks.encode("utf-8")).hexdigest(),
    }
