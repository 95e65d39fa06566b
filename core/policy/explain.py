"""``stepup policy explain``: every rule in file order, whether it matched, and why not.

It walks all rules with their full conditions (no index), so it also serves as an
independent check of the engine: its verdict must equal ``Policy.evaluate``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from core.durations import format_duration
from core.model import Intent, Outcome
from core.policy.decision import PolicyDecision
from core.policy.engine import Policy


@dataclass(frozen=True, slots=True)
class RuleTrace:
    index: int
    name: str
    decision: Outcome
    matched: bool
    failed: str | None  # the first condition the request fails, in the order written
    decided: bool  # this rule produced the final decision


@dataclass(frozen=True, slots=True)
class Explanation:
    policy_digest: str
    intent: Intent
    now: datetime
    rules: tuple[RuleTrace, ...]
    decision: PolicyDecision

    def render(self) -> str:
        intent, decision = self.intent, self.decision
        request = (
            f"agent={intent.agent} action={intent.action} class={intent.action_class} "
            f"target={intent.target} env={intent.environment}"
        )
        if intent.data_volume_bytes is not None:
            request += f" volume={intent.data_volume_bytes}"
        if intent.break_glass:
            request += " break_glass=true"
        lines = [
            f"policy   {self.policy_digest}",
            f"request  {request}",
            f"at       {self.now.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC",
            "rules:",
        ]
        width = max((len(f"[{t.index}] {t.name} ({t.decision})") for t in self.rules), default=0)
        decider = next((t for t in self.rules if t.decided), None)
        for trace in self.rules:
            head = f"[{trace.index}] {trace.name} ({trace.decision})".ljust(width)
            if not trace.matched:
                lines.append(f"  {head}  no: {trace.failed}")
            elif trace.decided:
                lines.append(f"  {head}  MATCH <- decides")
            elif decider is not None and decider.decision is Outcome.DENY:
                lines.append(f"  {head}  match, but deny rule {decider.name} wins")
            else:
                lines.append(f"  {head}  match, but an earlier rule decides")
        if not self.rules:
            lines.append("  (none: the policy denies everything)")
        lines.append(f"decision {self._summary()}")
        lines.extend(f"  - {reason}" for reason in decision.reasons)
        return "\n".join(lines)

    def _summary(self) -> str:
        d = self.decision
        by = f"by rule {d.rule}" if d.rule else "by default"
        text = f"{d.outcome.upper()} {by}, tier {d.tier}"
        if d.outcome is Outcome.APPROVE:
            text += f", quorum {d.quorum} of {', '.join(d.approver_groups)}"
            text += f", channel {d.channel}" if d.channel else ""
            text += ", step-up" if d.step_up else ""
            if d.escalate_to and d.escalate_after:
                text += f", escalate to {d.escalate_to} after {format_duration(d.escalate_after)}"
            text += f", expires after {format_duration(d.approval_timeout)}"
        if d.outcome is not Outcome.DENY:
            text += f", max_ttl {format_duration(d.max_ttl)}"
        return text + (", BREAK-GLASS" if d.break_glass else "")


def explain(policy: Policy, intent: Intent, now: datetime) -> Explanation:
    decision = policy.evaluate(intent, now)
    traces = []
    for rule in policy.rules:
        failed = rule.first_failure(intent, now)
        traces.append(
            RuleTrace(
                index=rule.index,
                name=rule.name,
                decision=rule.outcome,
                matched=failed is None,
                failed=failed,
                decided=rule.name == decision.rule,
            )
        )
    return Explanation(
        policy_digest=policy.digest,
        intent=intent,
        now=now,
        rules=tuple(traces),
        decision=decision,
    )
