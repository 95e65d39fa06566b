"""``stepup trust``: the issuers whose workload tokens authenticate agents (docs/identity.md)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from bot.cli.common import JsonFlag, Table, fail, settings_or_exit
from bot.clock import utc_now
from core.errors import StepupError

if TYPE_CHECKING:
    from core.identity.registry import TrustRegistry

trust_app = typer.Typer(
    help="Trusted issuers of workload tokens (OIDC providers, SPIFFE trust domains).",
    no_args_is_help=True,
)

Audience = Annotated[
    str, typer.Option("--audience", help="The aud a token must carry to be accepted")
]
Replace = Annotated[
    bool,
    typer.Option("--replace", help="Replace the one of this name (its bound agents stay bound)"),
]


def _registry() -> TrustRegistry:
    from bot.wiring import open_database
    from core.identity.registry import TrustRegistry

    return TrustRegistry(open_database(settings_or_exit()))


@trust_app.command("add-oidc")
def add_oidc(
    name: Annotated[str, typer.Argument(help="A name for it, e.g. k8s-prod or github")],
    issuer: Annotated[str, typer.Option("--issuer", help="The exact iss of its tokens")],
    audience: Audience,
    jwks_uri: Annotated[
        str | None,
        typer.Option("--jwks-uri", help="Its keys (default: from its discovery document)"),
    ] = None,
    replace: Replace = False,
) -> None:
    """Trust an OIDC provider's tokens (Kubernetes service accounts, GitHub Actions...)."""
    try:
        trusted = _registry().add_oidc(
            name,
            issuer=issuer,
            audience=audience,
            jwks_uri=jwks_uri,
            by="cli",
            now=utc_now(),
            replace=replace,
        )
    except StepupError as exc:
        raise fail(exc.detail) from None
    typer.echo(f"trusted {trusted.name}: OIDC tokens of {trusted.issuer} for {trusted.audience}")


@trust_app.command("add-spiffe")
def add_spiffe(
    trust_domain: Annotated[str, typer.Argument(help="The trust domain, e.g. prod.example.org")],
    audience: Audience,
    bundle: Annotated[
        Path | None, typer.Option("--bundle", help="The trust domain's SPIFFE bundle (JWKS)")
    ] = None,
    jwks_uri: Annotated[
        str | None, typer.Option("--jwks-uri", help="Where to fetch its JWT-SVID keys")
    ] = None,
    replace: Replace = False,
) -> None:
    """Trust a SPIFFE trust domain's JWT-SVIDs (sub: a SPIFFE ID of that domain)."""
    from core.identity.trust import MAX_JWKS

    text = None
    if bundle is not None:
        try:
            if bundle.stat().st_size > MAX_JWKS:
                raise fail(f"--bundle {bundle}: larger than {MAX_JWKS} bytes")
            text = bundle.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise fail(f"--bundle {bundle}: {exc}") from None
    try:
        trusted = _registry().add_spiffe(
            trust_domain,
            audience=audience,
            bundle=text,
            jwks_uri=jwks_uri,
            by="cli",
            now=utc_now(),
            replace=replace,
        )
    except StepupError as exc:
        raise fail(exc.detail) from None
    typer.echo(f"trusted {trusted.name}: JWT-SVIDs of {trusted.issuer} for {trusted.audience}")


@trust_app.command("list")
def list_trusted(as_json: JsonFlag = False) -> None:
    """Each trusted issuer: name, kind, issuer, audience, where its keys come from."""
    from core.identity.registry import describe

    table = Table(("NAME", "KIND", "ISSUER", "AUDIENCE", "KEYS"))
    for trusted in _registry().list():
        shown = describe(trusted)
        keys = (
            "bundle sha256:" + str(shown["bundle_sha256"])[:16]
            if trusted.jwks is not None
            else trusted.jwks_uri or "discovery"
        )
        table.add(
            (trusted.name, trusted.kind.value, trusted.issuer, trusted.audience, keys),
            {"name": trusted.name, **shown},
        )
    table.echo(as_json=as_json)


@trust_app.command("remove")
def remove(name: Annotated[str, typer.Argument(help="The trusted issuer's name")]) -> None:
    """Stop trusting it; the agent identities bound through it are removed too."""
    try:
        unbound = _registry().remove(name, by="cli", now=utc_now())
    except StepupError as exc:
        raise fail(exc.detail) from None
    typer.echo(f"{name} removed; {unbound} agent identit{'y' if unbound == 1 else 'ies'} unbound")
