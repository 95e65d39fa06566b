"""A stepup agent in a few lines: ask before a read, use the credential, report the outcome.

Against a local server (see examples/README.md):

    STEPUP_AGENT_KEY=stpa_... .venv/bin/python examples/agent_example.py

The read is pre-authorised by the `reads` rule of manifests/policy.example.yaml, so no human
is needed; an action that needs approval would wait in ``session`` until someone decides.
"""

from __future__ import annotations

import argparse
import os
import sys

from stepup_client import ActionClass, Credential, StepupClient, StepupClientError

DEFAULT_URL = "http://127.0.0.1:8080"


def look_up_order(credential: Credential, order: int) -> str:
    """Where a real agent calls the target system with ``credential.authorization``."""
    return f"order {order}: shipped (read with a {credential.token_type} credential)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--url",
        default=os.environ.get("STEPUP_URL", DEFAULT_URL),
        help=f"stepup's base URL (env STEPUP_URL, default {DEFAULT_URL})",
    )
    parser.add_argument(
        "--key",
        default=os.environ.get("STEPUP_AGENT_KEY"),
        help="the agent key from `stepup agents add` (env STEPUP_AGENT_KEY, which keeps it "
        "out of the process list)",
    )
    args = parser.parse_args(argv)
    if not args.key:
        parser.error("an agent key is required: --key or STEPUP_AGENT_KEY")

    with StepupClient(args.url, args.key) as client:
        try:
            request = client.submit(
                action="db.query",
                action_class=ActionClass.READ,
                target="orders-db",
                environment="staging",
                justification="look up order 42 for support ticket T-1234",
                parameters={"order": 42},
            )
            print(f"request {request.id}: {request.status} (rule {request.rule})")
            with client.session(request, timeout=60) as credential:
                print(f"credential scope {credential.scope}, expires {credential.expires_at:%c %Z}")
                print(look_up_order(credential, order=42))
            done = client.get(request.id)
            print(f"request {done.id}: {done.status}, outcome {done.outcome}")
        except StepupClientError as err:
            print(f"stepup: {err}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
