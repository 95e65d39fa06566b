"""Names through the real `stepup` command: agent ids are canonical, and a policy whose
patterns could never match a canonical name fails `policy check` naming the rule."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.integration.test_cli_admin import STEPUP, make_cli_env, stepup
from tests.support import TEST_POLICY

OWNER = "olga@example.com"


def test_an_agent_id_outside_the_safe_set_is_refused_and_nothing_is_added(
    database_url: str, tmp_path: Path
) -> None:
    env = make_cli_env(database_url, tmp_path)
    for bad, named in [
        ("d\u0435ploy-bot", "U+0435 (CYRILLIC SMALL LETTER IE) at position 2"),
        ("deploy bot", "space U+0020 at position 7"),
        ("deploy\u200b-bot", "U+200B"),
        ("deploy\x1b[2J", "control character U+001B"),
    ]:
        refused = stepup(env, "agents", "add", bad, "--owner", OWNER, ok=False)
        assert refused.returncode == 1
        assert "agent id" in refused.stderr and named in refused.stderr, refused.stderr
        assert "\x1b" not in refused.stderr and "\u0435" not in refused.stderr
        assert refused.stdout == ""
    assert stepup(env, "agents", "list").stdout == "ID\tOWNER\tSTATE\tADDED\tLIVE KEYS\tAUTH\n"


def test_an_agent_id_is_stored_in_nfkc_form_and_one_differing_in_case_is_refused(
    database_url: str, tmp_path: Path
) -> None:
    env = make_cli_env(database_url, tmp_path)
    added = stepup(
        env, "agents", "add", "\uff44\uff45\uff50\uff4c\uff4f\uff59-bot", "--owner", OWNER
    )
    assert added.stdout.splitlines()[0].startswith("agent deploy-bot registered")
    assert stepup(env, "agents", "list").stdout.splitlines()[1].startswith("deploy-bot\t")
    again = stepup(env, "agents", "add", "Deploy-Bot", "--owner", OWNER, ok=False)
    assert again.returncode == 1
    assert "differs from the existing agent deploy-bot only in letter case" in again.stderr
    assert stepup(env, "agents", "list").stdout.count("\n") == 2  # the header and deploy-bot


def test_policy_check_refuses_a_pattern_that_could_never_match(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        TEST_POLICY.replace(
            '{ action: "db.drop_database", environment: production }',
            '{ action: "db.drop_database", target: "p\u0430yments-*" }',
        ),
        encoding="utf-8",
    )
    done = subprocess.run(
        [STEPUP, "policy", "check", str(policy)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    assert "rules[0] (never-drop-prod-db).match.target[0]" in done.stderr, done.stderr
    assert "U+0430 (CYRILLIC SMALL LETTER A) at position 2 can never match" in done.stderr
    assert done.stdout == ""
