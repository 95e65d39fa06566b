"""The canonical JSON of ``parameters`` and its digest, as the server computes them
(``core/canonical.py``).

``parameters_digest`` is ``sha256:`` + hex SHA-256 of the RFC 8785 (JSON Canonicalization
Scheme) form of the parameters, through the ``rfc8785`` package, exactly as the server does, so
the client can check that an approval is bound to the exact arguments it sent (and any JCS
implementation in another language gets the same value).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import rfc8785

from stepup_client.errors import ParametersNotSerializable


def canonical_json(value: Any) -> str:
    """The RFC 8785 canonical form: keys sorted by UTF-16 code units, no spaces, numbers as
    ECMAScript prints them, non-ASCII kept as is (hashed as UTF-8)."""
    return _jcs(value).decode("utf-8")


def _plain(value: Any) -> Any:
    """``value`` as the server will parse it: tuples become lists, keys strings."""
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise ParametersNotSerializable(f"parameters must be plain JSON: {exc}") from None


def _jcs(value: Any) -> bytes:
    try:
        return rfc8785.dumps(_plain(value))
    except ValueError as exc:  # rfc8785's errors: integers beyond 2**53, lone surrogates
        raise ParametersNotSerializable(f"parameters must be plain JSON: {exc}") from None


def parameters_digest(parameters: Any) -> str:
    """``sha256:`` + hex of the RFC 8785 canonical JSON of ``parameters``."""
    return "sha256:" + hashlib.sha256(_jcs(parameters)).hexdigest()


def normalise_parameters(parameters: Any) -> dict[str, Any]:
    """The parameters as the server will store them: tuples become lists, keys strings.

    Refuses anything that is not a JSON object, so the digest sent and the digest stored agree.
    """
    plain = _plain(parameters)
    _jcs(plain)  # refused here, before sending, if the server could not digest it either
    if not isinstance(plain, dict):
        raise ParametersNotSerializable("parameters must be a JSON object (a dict)")
    return plain
