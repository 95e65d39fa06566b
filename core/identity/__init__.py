"""Agent identity: workload tokens (OIDC, SPIFFE JWT-SVIDs) from trusted issuers
(docs/identity.md)."""

from core.identity.presented import Presented, present
from core.identity.trust import TrustedIssuer, TrustKind
from core.identity.workload import VerifiedWorkload, WorkloadVerifier, looks_like_jwt

__all__ = [
    "Presented",
    "TrustKind",
    "TrustedIssuer",
    "VerifiedWorkload",
    "WorkloadVerifier",
    "looks_like_jwt",
    "present",
]
