"""Builds the engine's parts from the settings: one place, used by the CLI and the server."""

from __future__ import annotations

from bot.settings import Settings
from core.audit.checkpoints import CheckpointSchedule
from core.credentials import JwtIssuer
from core.keyretention import longest_credential_ttl
from core.keys import KeyRing
from core.policy import PolicyHolder
from core.service import Stepup
from core.storage.audit_store import sign_checkpoints
from core.storage.database import Database
from core.storage.migrate import upgrade
from core.usecases.limits import SubmitLimits


def open_database(settings: Settings, *, migrate: bool = True) -> Database:
    db = Database(
        settings.database_url,
        pool_size=settings.db_pool_size,
        pool_timeout=settings.db_pool_timeout_seconds,
    )
    if migrate:
        upgrade(db.engine)
    return db


def open_keyring(settings: Settings) -> KeyRing:
    return KeyRing.load_or_create(settings.keys_dir)


def build_service(settings: Settings, db: Database | None = None) -> Stepup:
    """The engine with everything it needs; refuses to start on a bad policy.

    With Slack neither configured nor sandboxed (``settings.slack_delivers`` false), nothing
    would ever deliver a Slack message, so the engine queues none.
    """
    holder = PolicyHolder.from_file(settings.policy_file)
    keyring = open_keyring(settings)
    # Retired keys stay in the JWKS at least as long as the policy in force lets credentials live.
    keyring.set_credential_lifetime(lambda: longest_credential_ttl(holder.current))
    database = db or open_database(settings)
    if settings.audit_checkpoint_entries > 0:
        sign_checkpoints(database, CheckpointSchedule(keyring, settings.audit_checkpoint_entries))
    issuer = JwtIssuer(keyring, issuer_url=settings.public_url)
    return Stepup(
        database,
        holder,
        keyring,
        issuer,
        issuer_url=settings.public_url,
        security_channel=settings.security_channel,
        limits=SubmitLimits(
            max_pending_per_agent=settings.max_pending_per_agent,
            submit_rate_per_agent=settings.submit_rate_per_agent,
        ),
        slack=settings.slack_delivers,
    )
