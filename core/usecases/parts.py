"""What every use case is given: the store, the policy, keys, the issuer, and the change feed."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime

from core.credentials import CredentialIssuer
from core.identity.workload import WorkloadVerifier
from core.issuers.base import BuildContext
from core.issuers.catalog import Issuers
from core.keys import KeyRing
from core.policy import PolicyHolder
from core.snapshots import RequestSnapshot
from core.store import Store
from core.usecases.limits import SubmitLimits

logger = logging.getLogger(__name__)

ChangeListener = Callable[[RequestSnapshot], None]
"""Called after a commit that changed a request (long-polls, Slack, the scheduler, other
replicas). Must not raise."""


class ChangeFeed:
    """Tells listeners of committed changes; a broken listener never undoes a change."""

    def __init__(self) -> None:
        self._listeners: list[ChangeListener] = []

    def subscribe(self, listener: ChangeListener) -> None:
        self._listeners.append(listener)

    def publish(self, snapshots: Iterable[RequestSnapshot]) -> None:
        for snapshot in snapshots:
            for listener in self._listeners:
                try:
                    listener(snapshot)
                except Exception:  # a broken listener must not undo a committed change
                    logger.exception("change listener failed for %s", snapshot.id)


@dataclass
class Parts:
    store: Store
    policy: PolicyHolder
    keyring: KeyRing
    issuer: CredentialIssuer
    issuer_url: str
    security_channel: str | None = None  # break-glass and revocation alerts
    feed: ChangeFeed = field(default_factory=ChangeFeed)
    limits: SubmitLimits = field(default_factory=SubmitLimits)  # per agent
    # The policy's credential issuers (PostgreSQL, Vault...), built on first use.
    issuers: Issuers = None  # type: ignore[assignment]  # set in __post_init__
    # Called after a commit that revoked issuer-backed credentials (their jtis): revokes them
    # at their issuers at once instead of at the next sweep. Must not raise.
    revoke_soon: Callable[[list[str], datetime], None] | None = None
    # Workload tokens from trusted issuers (docs/identity.md); by default none is trusted.
    identity: WorkloadVerifier = field(default_factory=WorkloadVerifier)

    def __post_init__(self) -> None:
        if self.issuers is None:
            keyring = self.keyring
            context = BuildContext(
                environ=os.environ,
                sign=lambda claims, typ: keyring.sign(claims, typ=typ),
                issuer_url=self.issuer_url,
            )
            self.issuers = Issuers(lambda: self.policy.current.issuers, context)
