"""The engine's use cases joined in one object: submit, vote, claim, complete, cancel, revoke,
expire, escalate, review break-glass, revoke at the issuer, introspect.

Each runs in one write transaction: load (locked), decide with the pure lifecycle, apply with a
compare-and-set, write the audit entries and the notices of what changed. Time is passed in.
"""

from __future__ import annotations

from core.usecases.base import ChangeListener, intent_record, terms_from
from core.usecases.breakglass import BreakGlass
from core.usecases.deciding import Deciding, VoteResult
from core.usecases.escalating import Escalating
from core.usecases.expiry import Expiry, ExpiryResult
from core.usecases.revoking import Revoking
from core.usecases.sessions import Sessions
from core.usecases.submitting import Submitting

__all__ = ["ChangeListener", "ExpiryResult", "Stepup", "VoteResult", "intent_record", "terms_from"]


class Stepup(Submitting, Deciding, Sessions, Expiry, Escalating, Revoking, BreakGlass):
    """The whole engine. Construct with the database, policy holder, key ring and issuer."""
