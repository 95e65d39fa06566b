"""Policy evaluation benchmark: a generated 500-rule policy, ~1000 requests, stepup vs Cedar.

Run from the repository root:  .venv/bin/python bench/policy_bench.py

The same rules are written for cedarpy (forbid for deny, permit for allow/approve, ``when``
conditions over context attributes, globs as ``like`` patterns) and both engines must agree
on allow-vs-deny for every request, so the timings compare equal work. Time windows are left
out of the generated rules because Cedar has no clock of its own to compare them with.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cedarpy
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.durations import parse_size
from core.model import ActionClass, Intent, Outcome
from core.policy import Policy, parse_policy

NOW = datetime(2024, 5, 15, 10, 0, tzinfo=UTC)
VERBS = {
    "read": ["get", "list", "describe", "query"],
    "write": ["put", "update", "deploy", "scale"],
    "destructive": ["delete", "drop_table", "drop_database", "truncate"],
    "secret_read": ["read_secret", "get_credentials"],
    "data_export": ["export", "dump", "snapshot"],
    "privilege_change": ["grant", "attach_policy", "create_key"],
}
CLASS_WEIGHTS = dict(zip(VERBS, [40, 25, 10, 8, 10, 7], strict=True))
SERVICES = (  # noqa: SIM905 - a word list reads better than 20 quoted items
    "billing orders payments users search inventory shipping ledger auth reports analytics "
    "notifications catalog pricing fraud support crm hr payroll warehouse"
).split() + [f"svc{n:02d}" for n in range(20)]
ENVS = {"production": 40, "staging": 25, "dev": 20, "qa": 10, "sandbox": 5}
AGENTS = (
    [f"ci-runner-{n}" for n in range(8)]
    + [f"etl-{n}" for n in range(4)]
    + ["deploy-bot", "support-bot", "sre-agent", "analyst-agent"]
)
GROUPS = ["sre-leads", "security-leads", "data-owners", "dbas", "platform"]


def pick_weighted(rng: random.Random, weights: dict[str, int]) -> str:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def one_or_two(rng: random.Random, values: list[str]) -> str | list[str]:
    return rng.choice(values) if rng.random() < 0.6 else rng.sample(values, 2)


def gen_rule(rng: random.Random, index: int) -> dict[str, Any]:
    decision = rng.choices(["deny", "approve", "allow"], weights=[20, 45, 35])[0]
    svc, klass = rng.choice(SERVICES), pick_weighted(rng, CLASS_WEIGHTS)
    match: dict[str, Any] = {}
    roll = rng.random()
    if decision == "deny":  # deny rules name a dangerous action, as real ones do
        klass = rng.choice(["destructive", "privilege_change", "data_export", "secret_read"])
        match["action"] = f"{svc}.{rng.choice(VERBS[klass])}"
    elif roll < 0.5:  # every generated rule is about one service; the tail holds catch-alls
        match["action"] = f"{svc}.*"
    elif roll < 0.85:
        match["action"] = f"{svc}.{rng.choice(VERBS[klass])}"
    else:
        match["action"] = [f"{svc}.{rng.choice(VERBS[klass])}", f"{rng.choice(SERVICES)}.*"]
    if rng.random() < 0.7:
        match["action_class"] = klass if rng.random() < 0.7 else [klass, rng.choice(list(VERBS))]
    if rng.random() < 0.8:
        match["environment"] = one_or_two(rng, list(ENVS))
    if rng.random() < 0.25:
        match["target"] = rng.choice([f"{svc}/prod-*", f"{svc}/*-eu", f"{svc}/*"])
    if rng.random() < 0.2:
        match["agent"] = rng.choice(["ci-*", "etl-*", rng.choice(AGENTS)])
    if klass == "data_export" and rng.random() < 0.5:
        match["data_volume_bytes"] = {"gt": rng.choice(["500MB", "1GB", "10GB"])}
    rule: dict[str, Any] = {
        "name": f"{decision}-{svc}-{index}",
        "match": match,
        "decision": decision,
    }
    if decision == "approve":
        rule.update(approvers=rng.choice(GROUPS), quorum=rng.choice([1, 1, 2]), channel="approvals")
        if rng.random() < 0.2:
            rule["break_glass"] = True
    elif decision == "allow":
        rule.update(tier="low", max_ttl=rng.choice(["5m", "10m"]))
    else:
        rule["reason"] = f"{svc}: not automated here"
    return rule


def gen_policy_text(rng: random.Random, count: int) -> tuple[str, list[dict[str, Any]]]:
    rules = [gen_rule(rng, i) for i in range(count - 2)]
    rules += [
        {"name": "dev-anything", "match": {"environment": "dev"}, "decision": "allow"},
        {
            "name": "sandbox-reads",
            "match": {"environment": "sandbox", "action_class": "read"},
            "decision": "allow",
        },
    ]
    document = {
        "version": 1,
        "approver_groups": {
            g: {"slack_users": [f"U0{g[:3].upper()}{n}" for n in range(3)]} for g in GROUPS
        },
        "channels": {"approvals": "C0APPROVALS"},
        "rules": rules,
    }
    return yaml.safe_dump(document, sort_keys=False), rules


def gen_intent(rng: random.Random) -> Intent:
    svc, klass = rng.choice(SERVICES), pick_weighted(rng, CLASS_WEIGHTS)
    volume = (
        int(10 ** rng.uniform(6, 10.7)) if klass == "data_export" and rng.random() < 0.9 else None
    )
    place = rng.choice(["prod", "stg", "dev"]) + "-" + rng.choice(["eu", "us"])
    return Intent(
        agent=rng.choice(AGENTS),
        action=f"{svc}.{rng.choice(VERBS[klass])}",
        action_class=ActionClass(klass),
        target=f"{svc}/{place}" if rng.random() < 0.5 else f"{svc}/{place}-{rng.randrange(9)}",
        environment=pick_weighted(rng, ENVS),
        data_volume_bytes=volume,
        break_glass=rng.random() < 0.05,
    )


def cedar_value(value: str | list[str], attribute: str, glob: bool) -> str:
    values = [value] if isinstance(value, str) else value
    op = "like" if glob else "=="
    tests = [f"context.{attribute} {op} {json.dumps(v)}" for v in values]
    return tests[0] if len(tests) == 1 else "(" + " || ".join(tests) + ")"


def cedar_rule(rule: dict[str, Any]) -> str:
    conditions = []
    for key, spec in rule["match"].items():
        if key in ("action", "target", "agent"):
            conditions.append(cedar_value(spec, key, glob=True))
        elif key in ("action_class", "environment"):
            conditions.append(cedar_value(spec, key, glob=False))
        elif key == "data_volume_bytes":
            ((op, size),) = spec.items()
            symbol = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}[op]
            conditions.append(
                f"(context has data_volume_bytes && context.data_volume_bytes {symbol} "
                f"{parse_size(size)})"
            )
    effect = "forbid" if rule["decision"] == "deny" else "permit"
    when = f" when {{ {' && '.join(conditions)} }}" if conditions else ""
    return f'@id("{rule["name"]}")\n{effect}(principal, action, resource){when};'


def cedar_request(intent: Intent) -> dict[str, Any]:
    context: dict[str, Any] = {
        "action": intent.action,
        "action_class": str(intent.action_class),
        "environment": intent.environment,
        "target": intent.target,
        "agent": intent.agent,
        "break_glass": intent.break_glass,
    }
    if intent.data_volume_bytes is not None:
        context["data_volume_bytes"] = intent.data_volume_bytes
    return {
        "principal": {"type": "Agent", "id": intent.agent},
        "action": {"type": "Action", "id": "request"},
        "resource": {"type": "Target", "id": intent.target},
        "context": context,
    }


def sample_ns(call: Callable[[Any], object], items: list[Any], rounds: int) -> list[int]:
    clock, samples = time.perf_counter_ns, []
    gc.disable()
    try:
        for _ in range(rounds):
            for item in items:
                start = clock()
                call(item)
                samples.append(clock() - start)
    finally:
        gc.enable()
    return samples


def summary(samples: list[float]) -> tuple[float, float, float]:
    cuts = statistics.quantiles(samples, n=100)
    return statistics.median(samples) / 1000, cuts[89] / 1000, cuts[98] / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rules", type=int, default=500)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=30, help="passes over the requests")
    parser.add_argument("--seed", type=int, default=20240515)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    text, rules = gen_policy_text(rng, args.rules)
    intents = [gen_intent(rng) for _ in range(args.requests)]
    started = time.perf_counter()
    policy = parse_policy(text, "bench")
    load_ms = (time.perf_counter() - started) * 1000
    policy_set = cedarpy.PolicySet.from_str("\n".join(cedar_rule(r) for r in rules))
    entities = cedarpy.Entities.from_json_str("[]")
    requests = [cedar_request(i) for i in intents]

    def stepup(intent: Intent) -> object:
        return policy.evaluate(intent, NOW)

    def stepup_cold(intent: Intent) -> object:
        clear_memos(policy)
        return policy.evaluate(intent, NOW)

    def cedar(request: dict[str, Any]) -> object:
        return cedarpy.is_authorized(request, policy_set, entities)

    decisions = [policy.evaluate(i, NOW) for i in intents]
    verdicts = cedarpy.is_authorized_batch(requests, policy_set, entities)
    agree = sum(
        (d.outcome is not Outcome.DENY) == v.allowed
        for d, v in zip(decisions, verdicts, strict=True)
    )
    outcomes = Counter(str(d.outcome) for d in decisions)
    kinds = len({(i.action_class, i.environment, i.action) for i in intents})
    no_match = sum(d.rule is None for d in decisions)

    sample_ns(stepup, intents, 2)  # warm the memo and the interpreter
    warm = summary([float(s) for s in sample_ns(stepup, intents, args.rounds)])
    cold = summary([float(s) for s in sample_ns(stepup_cold, intents, 1)])
    sample_ns(cedar, requests[:100], 1)
    single = summary([float(s) for s in sample_ns(cedar, requests, max(1, args.rounds // 10))])
    batch_runs = []
    for _ in range(5):
        start = time.perf_counter_ns()
        cedarpy.is_authorized_batch(requests, policy_set, entities)
        batch_runs.append((time.perf_counter_ns() - start) / len(requests) / 1000)
    batch = statistics.median(batch_runs)

    print(f"policy: {len(policy.rules)} rules, loaded and compiled in {load_ms:.0f} ms")
    print(f"requests: {len(intents)} ({kinds} distinct class/environment/action triples)")
    print(f"outcomes: {dict(outcomes)} (of the denials, no rule matched: {no_match})")
    print(f"agreement stepup vs cedar on allow-vs-deny: {agree}/{len(intents)}")
    print()
    print(f"{'engine':<38}{'median µs':>11}{'p90 µs':>10}{'p99 µs':>10}")
    for name, (p50, p90, p99) in [
        ("stepup Policy.evaluate (warm)", warm),
        ("stepup Policy.evaluate (cold memo)", cold),
        ("cedarpy.is_authorized", single),
    ]:
        print(f"{name:<38}{p50:>11.1f}{p90:>10.1f}{p99:>10.1f}")
    print(f"{'cedarpy.is_authorized_batch (per req)':<38}{batch:>11.1f}{'':>10}{'':>10}")
    print()
    print(
        f"median ratio stepup:cedar (is_authorized) = 1:{single[0] / warm[0]:.0f}"
        f"  ({warm[0] / single[0]:.3f})"
    )
    print(f"target median <= 30 µs: {'met' if warm[0] <= 30 else 'MISSED'}")
    if agree != len(intents):
        raise SystemExit("stepup and cedar disagree: the comparison is not valid")


def clear_memos(policy: Policy) -> None:
    """Forget the lookup memos (private on purpose): measures the first request of a kind."""
    policy._by_key.clear()
    policy._by_scope.clear()


if __name__ == "__main__":
    main()
