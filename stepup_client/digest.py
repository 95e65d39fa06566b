"""The canonical JSON of ``parameters`` and its digest, as the server computes them (DESIGN §4).

Kept byte-for-byte compatible with the server so the client can check that an approval is
bound to the exact arguments it sent.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from stepup_client.errors import ParametersNotSerializable


def canonical_json(value: Any) -> str:
    """Keys sorted, no spaces, non-ASCII kept as is (hashed as UTF-8)."""
    try:
        return json.dumps(
            value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
    except (TypeError, ValueError) as exc:
        raise ParametersNotSerializable(f"parameters must be plain JSON: {exc}") from None


def parameters_digest(parameters: Any) -> str:
    """``sha256:`` + hex of the canonical JSON of ``parameters``."""
    return "sha256:" + hashlib.sha256(canonical_json(parameters).encode("utf-8")).hexdigest()


def normalise_parameters(parameters: Any) -> dict[str, Any]:
    """The parameters as the server will store them: tuples become lists, keys strings.

    Refuses anything that is not a JSON object, so the digest sent and the digest stored agree.
    """
    plain = json.loads(canonical_json(parameters))
    if not isinstance(plain, dict):
        raise ParametersNotSerializable("parameters must be a JSON object (a dict)")
    return plain
