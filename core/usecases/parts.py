"""What every use case is given: the store, the policy, keys, the issuer, and the change feed."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from core.credentials import CredentialIssuer
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
