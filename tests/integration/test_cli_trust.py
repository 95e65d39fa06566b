"""``stepup trust`` and ``stepup agents add --oidc/--spiffe-id/--no-key``, in-process (typer's
runner) on both databases; what is printed, refused and audited."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bot.cli import app
from core.storage.database import Database
from core.storage.tables import AuditRow
from tests.integration.test_cli_admin import make_cli_env
from tests.integration.workload_tokens import SigningKey, spiffe_bundle

ISSUER = "https://token.actions.githubusercontent.com"


@pytest.fixture
def env(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.chdir(tmp_path)  # no stray .env
    return make_cli_env(database_url, tmp_path)


def stepup(env: dict[str, str], *args: str, code: int = 0) -> tuple[str, str]:
    result = CliRunner().invoke(app, list(args), env=env, catch_exceptions=False)
    assert result.exit_code == code, (result.stdout, result.stderr)
    return result.stdout, result.stderr


def audit(database_url: str, kind: str) -> list[dict[str, object]]:
    db = Database(database_url)
    try:
        with db.read() as session:
            rows = session.query(AuditRow).filter(AuditRow.kind == kind).order_by(AuditRow.seq)
            return [json.loads(row.data) for row in rows]
    finally:
        db.dispose()


def test_trust_add_list_remove(env: dict[str, str], database_url: str, tmp_path: Path) -> None:
    out, _ = stepup(env, "trust", "add-oidc", "github", "--issuer", ISSUER, "--audience", "stepup")
    assert out.strip() == f"trusted github: OIDC tokens of {ISSUER} for stepup"
    bundle = tmp_path / "bundle.json"
    bundle.write_text(spiffe_bundle(SigningKey.ec("b1")))
    out, _ = stepup(
        env, "trust", "add-spiffe", "prod.example.org", "--bundle", str(bundle),
        "--audience", "stepup",
    )  # fmt: skip
    assert (
        out.strip() == "trusted prod.example.org: JWT-SVIDs of spiffe://prod.example.org for stepup"
    )
    listed = json.loads(stepup(env, "trust", "list", "--json")[0])
    assert [(t["name"], t["kind"], t["jwks_uri"]) for t in listed] == [
        ("github", "oidc", None),
        ("prod.example.org", "spiffe", None),
    ]
    assert len(str(listed[1]["bundle_sha256"])) == 64
    table = stepup(env, "trust", "list")[0].splitlines()
    assert table[0] == "NAME\tKIND\tISSUER\tAUDIENCE\tKEYS"
    assert table[1] == f"github\toidc\t{ISSUER}\tstepup\tdiscovery"
    # The same name twice: refused, unless --replace.
    _, err = stepup(
        env, "trust", "add-oidc", "github", "--issuer", ISSUER, "--audience", "x", code=1
    )
    assert err.strip() == "error: trusted issuer github already exists"
    stepup(
        env, "trust", "add-oidc", "github", "--issuer", ISSUER, "--audience", "other",
        "--jwks-uri", ISSUER + "/.well-known/jwks", "--replace",
    )  # fmt: skip
    stepup(
        env,
        "agents",
        "add",
        "gh-bot",
        "--owner",
        "o@example.com",
        "--oidc",
        "github:repo:acme/app:ref:refs/heads/main",
    )
    out, _ = stepup(env, "trust", "remove", "github")
    assert out.strip() == "github removed; 1 agent identity unbound"
    _, err = stepup(env, "trust", "remove", "github", code=1)
    assert err.strip() == "error: no trusted issuer github"
    added = audit(database_url, "trust.added")
    assert [(a["name"], a["replaced"]) for a in added] == [
        ("github", False),
        ("prod.example.org", False),
        ("github", True),
    ]
    assert added[2]["audience"] == "other" and "jwks" not in added[1]
    assert audit(database_url, "trust.removed") == [{"name": "github", "unbound": 1}]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--issuer", "http://issuer.example.com"], "issuer: must be an https URL"),
        (["--issuer", "https://u:p@issuer.example.com"], "issuer: no user:password"),
        (
            ["--issuer", ISSUER, "--jwks-uri", "http://keys.example.com"],
            "jwks_uri: must be an https URL",
        ),
    ],
)
def test_trust_urls_must_be_https(env: dict[str, str], args: list[str], message: str) -> None:
    _, err = stepup(env, "trust", "add-oidc", "x", *args, "--audience", "a", code=1)
    assert err.startswith(f"error: {message}")
    assert stepup(env, "trust", "list", "--json")[0].strip() == "[]"


def test_spiffe_needs_a_bundle_or_a_jwks_uri(env: dict[str, str], tmp_path: Path) -> None:
    _, err = stepup(env, "trust", "add-spiffe", "td.example", "--audience", "a", code=1)
    assert err.strip() == "error: give either a bundle or a jwks_uri"
    x509_only = tmp_path / "b.json"
    x509_only.write_text(json.dumps({"keys": [{"kty": "EC", "use": "x509-svid", "kid": "x"}]}))
    _, err = stepup(
        env, "trust", "add-spiffe", "td.example", "--bundle", str(x509_only), "--audience", "a",
        code=1,
    )  # fmt: skip
    assert "no key for JWT-SVIDs" in err


def test_agents_bound_to_workload_identities(
    env: dict[str, str], database_url: str, tmp_path: Path
) -> None:
    _, err = stepup(
        env, "agents", "add", "ci", "--owner", "o@example.com", "--oidc", "k8s:system:sa", code=1
    )
    assert err.strip() == "error: --oidc k8s:system:sa: no trusted issuer k8s (stepup trust list)"
    _, err = stepup(
        env, "agents", "add", "ci", "--owner", "o@example.com",
        "--spiffe-id", "spiffe://td.example/ci", code=1,
    )  # fmt: skip
    assert "the trust domain td.example is not trusted" in err
    _, err = stepup(env, "agents", "add", "ci", "--owner", "o@example.com", "--no-key", code=1)
    assert err.strip() == "error: an agent without a key needs a workload identity"

    stepup(
        env,
        "trust",
        "add-oidc",
        "k8s",
        "--issuer",
        "https://k8s.example.com",
        "--audience",
        "stepup",
    )
    bundle = tmp_path / "bundle.json"
    bundle.write_text(spiffe_bundle(SigningKey.ec("b1")))
    stepup(env, "trust", "add-spiffe", "td.example", "--bundle", str(bundle), "--audience", "s")
    _, err = stepup(
        env, "agents", "add", "ci", "--owner", "o@example.com", "--oidc", "td.example:x", code=1
    )
    assert "td.example is a SPIFFE trust domain (use --spiffe-id)" in err

    out, _ = stepup(
        env, "agents", "add", "ci", "--owner", "o@example.com",
        "--oidc", "k8s:system:serviceaccount:ci:deployer",
        "--spiffe-id", "spiffe://td.example/ns/ci/sa/deployer", "--no-key",
    )  # fmt: skip
    assert out.splitlines() == [
        "agent ci registered (owner o@example.com, 2 workload identities); no static key"
    ]
    assert "stpa_" not in out
    out, _ = stepup(env, "agents", "add", "dev", "--owner", "d@example.com")
    assert out.splitlines()[-1].startswith("stpa_")
    # One subject, one agent.
    _, err = stepup(
        env, "agents", "add", "ci2", "--owner", "o@example.com",
        "--oidc", "k8s:system:serviceaccount:ci:deployer", code=1,
    )  # fmt: skip
    assert "is bound to agent ci already" in err

    listed = {a["id"]: a for a in json.loads(stepup(env, "agents", "list", "--json")[0])}
    assert listed["ci"]["auth"] == ["oidc:k8s", "spiffe"] and listed["ci"]["live_keys"] == 0
    assert listed["dev"]["auth"] == ["static key (development)"]
    rows = stepup(env, "agents", "list")[0].splitlines()
    assert rows[1].startswith("ci\t") and rows[1].endswith("\toidc:k8s, spiffe")
    assert rows[2].endswith("\tstatic key (development)")
    [entry] = [a for a in audit(database_url, "agent.added") if a["agent"] == "ci"]
    assert entry == {
        "agent": "ci",
        "owner": "o@example.com",
        "identities": [
            "k8s:system:serviceaccount:ci:deployer",
            "td.example:spiffe://td.example/ns/ci/sa/deployer",
        ],
        "key": False,
    }
