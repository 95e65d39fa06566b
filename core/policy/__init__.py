"""The policy engine: load a YAML policy, evaluate an intent, explain the answer.

Deny by default: a matching deny rule wins wherever it stands, otherwise the first matching
rule in file order decides, and a request no rule matches is denied.
"""

from core.policy.compiled import ApproverGroup, CompiledRule, PolicyDefaults
from core.policy.decision import PolicyDecision
from core.policy.engine import NO_MATCH_REASON, Policy
from core.policy.explain import Explanation, RuleTrace, explain
from core.policy.loader import PolicyHolder, load_policy, parse_policy

__all__ = [
    "NO_MATCH_REASON",
    "ApproverGroup",
    "CompiledRule",
    "Explanation",
    "Policy",
    "PolicyDecision",
    "PolicyDefaults",
    "PolicyHolder",
    "RuleTrace",
    "explain",
    "load_policy",
    "parse_policy",
]
