"""Property tests: random policies and requests against a naive reference of the semantics
(names compared with letter case ignored)."""

from __future__ import annotations

import fnmatch
import operator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from core.model import ActionClass, Intent, Outcome
from core.policy import NO_MATCH_REASON, Policy, explain
from core.policy.build import build_policy
from core.policy.schema import PolicySpec

NOW = datetime(2024, 5, 15, 10, 0, tzinfo=UTC)
ACTIONS = ["db.query", "db.drop_database", "s3.get", "s3.put", "iam.grant", "k8s.delete"]
TARGETS = ["orders", "payroll/2024", "vault:kv/prod/db", "bucket/exports"]
AGENTS = ["ci-runner", "deploy-bot", "analyst"]
ENVS = ["production", "staging", "dev"]
CLASSES = [c.value for c in ActionClass]
OPS = {"gt": operator.gt, "gte": operator.ge, "lt": operator.lt, "lte": operator.le}

Rule = dict[str, Any]


def one_or_list(values: list[str]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.sampled_from(values), st.lists(st.sampled_from(values), min_size=1, max_size=3)
    )


def coherent(bounds: dict[str, int]) -> bool:
    if not bounds or ("gt" in bounds and "gte" in bounds) or ("lt" in bounds and "lte" in bounds):
        return False
    low = bounds["gt"] + 1 if "gt" in bounds else bounds.get("gte", 0)
    high = bounds["lt"] - 1 if "lt" in bounds else bounds.get("lte", 10**9)
    return low <= high


volumes = st.dictionaries(st.sampled_from(list(OPS)), st.integers(0, 2000), max_size=2).filter(
    coherent
)


def matches(environment: st.SearchStrategy[Any] | None = None) -> st.SearchStrategy[Rule]:
    optional: dict[str, st.SearchStrategy[Any]] = {
        "action": one_or_list([*ACTIONS, "db.*", "S3.*", "*", "k8s.?elete", "[Di]*"]),
        "target": one_or_list([*TARGETS, "Payroll/*", "vault:*", "*"]),
        "agent": one_or_list([*AGENTS, "CI-*"]),
        "action_class": one_or_list(CLASSES),
        "data_volume_bytes": volumes,
        "break_glass": st.booleans(),
    }
    if environment is None:
        optional["environment"] = one_or_list([*ENVS, "Staging"])
        return st.fixed_dictionaries({}, optional=optional)
    return st.fixed_dictionaries({"environment": environment}, optional=optional)


@st.composite
def rules(draw: st.DrawFn, environment: st.SearchStrategy[Any] | None = None) -> list[Rule]:
    drawn = []
    for index in range(draw(st.integers(0, 12))):
        decision = draw(st.sampled_from(["allow", "approve", "deny"]))
        rule: Rule = {
            "name": f"r{index}",
            "match": draw(matches(environment)),
            "decision": decision,
        }
        if decision == "approve":
            rule.update(approvers="oncall", channel="ops", break_glass=draw(st.booleans()))
        drawn.append(rule)
    return drawn


CASES = (str, str.upper, str.title)


def names(values: list[str]) -> st.SearchStrategy[str]:
    """One of ``values``, as written or in another letter case."""
    return st.builds(
        lambda value, case: case(value), st.sampled_from(values), st.sampled_from(CASES)
    )


intents = st.builds(
    Intent,
    agent=names([*AGENTS, "ci-", "stranger"]),
    action=names([*ACTIONS, "unknown.op"]),
    action_class=st.sampled_from(list(ActionClass)),
    target=names([*TARGETS, "elsewhere"]),
    environment=names([*ENVS, "qa"]),
    data_volume_bytes=st.none() | st.integers(0, 2000),
    break_glass=st.booleans(),
)


def build(rule_list: list[Rule]) -> Policy:
    document = {
        "version": 1,
        "approver_groups": {"oncall": {"slack_users": ["U0ONE"]}},
        "channels": {"ops": "C0OPS"},
        "rules": rule_list,
    }
    # Straight to the schema: the YAML layer has its own tests and would triple the run time.
    return build_policy(PolicySpec.model_validate(document), digest="sha256:test")


def reference_matches(match: Rule, intent: Intent) -> bool:
    for key, spec in match.items():
        wanted = [spec] if isinstance(spec, str) else spec
        if key in ("action", "target", "agent"):
            value = getattr(intent, key).lower()
            if not any(fnmatch.fnmatchcase(value, p.lower()) for p in wanted):
                return False
        elif key == "environment":
            if intent.environment.lower() not in [w.lower() for w in wanted]:
                return False
        elif key == "action_class":
            if str(intent.action_class) not in wanted:
                return False
        elif key == "data_volume_bytes":
            volume = intent.data_volume_bytes
            if volume is None or not all(OPS[op](volume, n) for op, n in spec.items()):
                return False
        elif key == "break_glass" and intent.break_glass != spec:
            return False
    return True


def reference(rule_list: list[Rule], intent: Intent) -> tuple[str | None, Outcome]:
    """The evaluation order read literally (the header of manifests/policy.example.yaml): any
    matching deny wins, else the first match, else deny."""
    matching = [r for r in rule_list if reference_matches(r["match"], intent)]
    denies = [r for r in matching if r["decision"] == "deny"]
    if denies:
        return denies[0]["name"], Outcome.DENY
    if not matching:
        return None, Outcome.DENY
    first = matching[0]
    if first["decision"] == "approve" and intent.break_glass and first["break_glass"]:
        return first["name"], Outcome.ALLOW
    return first["name"], Outcome(first["decision"])


@settings(max_examples=300, deadline=None)
@given(rules(), st.lists(intents, min_size=1, max_size=12))
def test_engine_agrees_with_the_reference(rule_list: list[Rule], requests: list[Intent]) -> None:
    policy = build(rule_list)
    for intent in requests * 2:  # the second pass is served from the memo
        decision = policy.evaluate(intent, NOW)
        assert (decision.rule, decision.outcome) == reference(rule_list, intent)


@settings(deadline=None)
@given(rules(environment=one_or_list(ENVS)), intents)
def test_no_matching_rule_means_deny(rule_list: list[Rule], intent: Intent) -> None:
    # every rule names its environments from ENVS, and the request comes from elsewhere
    decision = build(rule_list).evaluate(replace(intent, environment="QA"), NOW)
    assert decision.outcome is Outcome.DENY
    assert decision.rule is None
    assert decision.reasons == (NO_MATCH_REASON,)


@st.composite
def deny_matching(draw: st.DrawFn, intent: Intent) -> Rule:
    """A deny rule built from some of the request's own fields, so it surely matches."""
    match: Rule = {}
    for key in draw(st.sets(st.sampled_from(["action", "target", "agent"]))):
        match[key] = draw(st.sampled_from([getattr(intent, key), "*"]))
    if draw(st.booleans()):
        match["environment"] = intent.environment  # exact, not a glob
    if draw(st.booleans()):
        match["action_class"] = [str(intent.action_class)]
    if intent.data_volume_bytes is not None and draw(st.booleans()):
        match["data_volume_bytes"] = {"gte": intent.data_volume_bytes}
    return {"name": "inserted-deny", "match": match, "decision": "deny", "reason": "no"}


@settings(max_examples=300, deadline=None)
@given(rules(), intents, st.data())
def test_a_matching_deny_wins_wherever_it_stands(
    rule_list: list[Rule], intent: Intent, data: st.DataObject
) -> None:
    position = data.draw(st.integers(0, len(rule_list)), label="position")
    deny = data.draw(deny_matching(intent), label="deny")
    rule_list = [*rule_list[:position], deny, *rule_list[position:]]
    decision = build(rule_list).evaluate(intent, NOW)
    assert decision.outcome is Outcome.DENY
    assert decision.break_glass is False
    first_deny = next(
        r["name"]
        for r in rule_list
        if r["decision"] == "deny" and reference_matches(r["match"], intent)
    )
    assert decision.rule == first_deny
    assert rule_list.index(next(r for r in rule_list if r["name"] == first_deny)) <= position


@settings(deadline=None)
@given(rules(), intents)
def test_break_glass_never_unlocks_a_deny(rule_list: list[Rule], intent: Intent) -> None:
    for rule in rule_list:
        rule["match"].pop("break_glass", None)
    policy = build(rule_list)
    plain = policy.evaluate(replace(intent, break_glass=False), NOW)
    glass = policy.evaluate(replace(intent, break_glass=True), NOW)
    assert plain.rule == glass.rule
    assert (plain.outcome is Outcome.DENY) == (glass.outcome is Outcome.DENY)
    if glass.break_glass:
        assert plain.outcome is Outcome.APPROVE
        assert glass.outcome is Outcome.ALLOW
        assert glass.max_ttl <= plain.max_ttl


@settings(deadline=None)
@given(rules(), intents)
def test_explain_agrees_with_evaluate(rule_list: list[Rule], intent: Intent) -> None:
    policy = build(rule_list)
    explanation = explain(policy, intent, NOW)
    assert explanation.decision == policy.evaluate(intent, NOW)
    assert [t.matched for t in explanation.rules] == [
        reference_matches(r["match"], intent) for r in rule_list
    ]
    assert all((t.failed is None) == t.matched for t in explanation.rules)
    decided = [t.name for t in explanation.rules if t.decided]
    assert decided == ([explanation.decision.rule] if explanation.decision.rule else [])


@settings(max_examples=300, deadline=None)
@given(rules(), intents, st.sampled_from(CASES), st.sampled_from(CASES))
def test_letter_case_never_changes_the_decision(
    rule_list: list[Rule], intent: Intent, case: Any, other: Any
) -> None:
    policy = build(rule_list)
    decision = policy.evaluate(intent, NOW)
    for field in ("action", "target", "environment", "agent"):
        for variant in (case, other):
            changed = replace(intent, **{field: variant(getattr(intent, field))})
            assert policy.evaluate(changed, NOW) == decision
