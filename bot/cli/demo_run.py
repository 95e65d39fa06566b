"""The demo agent's script: four requests through the Python client, each status printed as it
changes. Only ``stepup_client`` talks to the service, as a real agent would."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt

from stepup_client import Credential, Outcome, Request, Status, StepupClient

Say = Callable[[str], None]
HOLD_SECONDS = 2  # one long-poll: a vote short of the quorum shows within this


@dataclass(frozen=True, slots=True)
class Step:
    """One request the demo makes; its fields hit a rule of manifests/policy.example.yaml."""

    title: str
    action: str
    action_class: str
    target: str
    environment: str
    justification: str
    parameters: Mapping[str, Any] = field(default_factory=dict)
    break_glass: bool = False


STEPS = (
    Step(
        "pre-authorised read",
        "db.query",
        "read",
        "orders-db",
        "production",
        "count yesterday's orders for the daily report",
        {"sql": "SELECT count(*) FROM orders WHERE day = current_date - 1"},
    ),
    Step(
        "denied action",
        "db.drop_database",
        "destructive",
        "orders-db",
        "production",
        "free disk space on the orders database server",
        {"database": "orders"},
    ),
    Step(
        "break-glass secret read",
        "vault.read",
        "secret_read",
        "payments/db-password",
        "production",
        "INC-42: payments cannot reach its database, checking the credentials",
        {"path": "payments/db-password"},
        break_glass=True,
    ),
    Step(
        "production change needing two approvers",
        "k8s.rollout_restart",
        "destructive",
        "payments-api",
        "production",
        "INC-42: restart payments-api to pick up the fixed database credentials",
        {"deployment": "payments-api", "namespace": "payments"},
    ),
)


class CredentialRefused(Exception):
    """The token did not pass the checks a target system makes (the request ends failed)."""


class DemoTimeout(Exception):
    """A request was still undecided when the demo's wait ran out (it has been cancelled)."""


class Demo:
    """Runs ``STEPS`` one after the other. ``current`` is the request in hand, for Ctrl-C."""

    def __init__(
        self,
        client: StepupClient,
        base_url: str,
        *,
        say: Say,
        timeout: float,
        hint: str,
        pause: float = 0.0,
    ) -> None:
        self.client = client
        self.base_url = base_url.rstrip("/")
        self.say = say
        self.timeout = timeout
        self.hint = hint  # where a person can approve, printed once a request waits for them
        self.pause = pause  # seconds the agent "works" with a credential (a watcher sees it live)
        self.current: Request | None = None
        self.finals: list[Request] = []

    def run(self) -> list[Request]:
        for number, step in enumerate(STEPS, start=1):
            self.say(f"{number}. {step.title}: {step.action} on {step.target} ({step.environment})")
            self.finals.append(self._one(step))
            self.current = None
        return self.finals

    def _one(self, step: Step) -> Request:
        request = self.client.submit(
            step.action,
            step.action_class,
            step.target,
            step.environment,
            step.justification,
            parameters=step.parameters,
            break_glass=step.break_glass,
        )
        self.current = request
        self._show(request, first=True)
        request = self._follow(request)
        if request.status is Status.APPROVED:
            request = self._use(request)
        return request

    def _follow(self, request: Request) -> Request:
        """Long-polls a pending request until it is decided, printing each change."""
        deadline = time.monotonic() + self.timeout
        if request.status is Status.PENDING and self.hint:
            self.say(f"   waiting for approvers: {self.hint}")
        while request.status is Status.PENDING:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.client.cancel(request.id)
                self.say(f"   {request.id} cancelled: still pending after {self.timeout:g}s")
                raise DemoTimeout(request.id)
            hold = max(1, min(HOLD_SECONDS, int(remaining)))
            seen = request
            request = self.client.poll(request.id, since=request.status, wait=hold)
            self.current = request
            if (request.status, request.approvals.received) != (
                seen.status,
                seen.approvals.received,
            ):
                self._show(request)
        return request

    def _use(self, request: Request) -> Request:
        """Claims, checks and "uses" the credential. The client's session reports the outcome,
        which revokes it however the block ends: succeeded, failed, or aborted on Ctrl-C."""
        try:
            with self.client.session(request) as credential:
                active = self.client.get(request.id)
                self.current = active
                self._show(active)
                self.say(f"   using it: {self._check(credential, active)}")
                time.sleep(self.pause)
        except CredentialRefused as exc:
            self.say(f"   the credential does not check out: {exc}")
        request = self.client.get(request.id)
        self.current = request
        self._show(request)
        return request

    def _check(self, credential: Credential, request: Request) -> str:
        """What a target system does with the token: its signature against the service's
        published keys, and its arguments digest against what the agent asked for."""
        try:
            jwks = httpx.get(f"{self.base_url}/.well-known/jwks.json", timeout=10).json()
            kid = jwt.get_unverified_header(credential.token).get("kid")
            keys = [k for k in jwks["keys"] if k.get("kid") == kid]
            if not keys:
                raise CredentialRefused(f"no published key has the token's kid {kid!r}")
            claims = jwt.decode(
                credential.token,
                jwt.PyJWK(keys[0]).key,
                algorithms=["EdDSA"],
                options={"verify_aud": False},
            )
        except (httpx.HTTPError, ValueError, KeyError, jwt.PyJWTError) as exc:
            raise CredentialRefused(f"{type(exc).__name__}: {exc}") from None
        if claims.get("args_digest") != request.parameters_digest:
            raise CredentialRefused("it is bound to other arguments")
        return (
            f"token for {claims['scope']} on {claims['aud']}, signature and arguments "
            f"digest checked, expires {credential.expires_at:%H:%M:%S}Z"
        )

    def _show(self, request: Request, *, first: bool = False) -> None:
        parts = [f"   {request.id} {request.status.value}"]
        if first and request.rule:
            parts.append(f"(rule {request.rule})")
        break_glass = bool(request.raw.get("break_glass"))
        if break_glass and request.status is Status.APPROVED:
            parts.append("break-glass: granted now, reviewed after")
        elif request.approvals.required and request.status in (Status.PENDING, Status.APPROVED):
            parts.append(f"approvals {request.approvals.received}/{request.approvals.required}")
        if request.status is Status.DENIED:
            reason = request.status_reason or "; ".join(request.reasons)
            if reason:
                parts.append(f"- {reason}")
        if request.status is Status.ACTIVE and request.credential is not None:
            parts.append(f"credential expires {request.credential.expires_at:%H:%M:%S}Z")
        if request.status is Status.COMPLETED and request.outcome:
            parts.append(f"({request.outcome})")
        self.say(" ".join(parts))

    def abandon(self) -> str | None:
        """After Ctrl-C: withdraw the request in hand. Says what became of it, if anything."""
        request = self.current
        if request is None:
            return None
        try:
            latest = self.client.get(request.id)
            if latest.status in (Status.PENDING, Status.APPROVED):
                self.client.cancel(request.id)
                return f"{request.id} cancelled"
            if latest.status is Status.ACTIVE:
                self.client.complete(request.id, Outcome.ABORTED, "the stepup demo was interrupted")
                latest = self.client.get(request.id)
            if latest.status is Status.COMPLETED and latest.outcome == Outcome.ABORTED.value:
                return f"{request.id} completed (aborted), its credential revoked"
        except Exception as exc:  # the service may be the thing that went away
            return f"{request.id} left as it was: {exc}"
        return None


def summary(finals: list[Request]) -> str:
    counts: dict[str, int] = {}
    for request in finals:
        counts[request.status.value] = counts.get(request.status.value, 0) + 1
    return ", ".join(f"{n} {status}" for status, n in counts.items())
