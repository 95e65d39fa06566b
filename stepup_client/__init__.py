"""A small client for stepup's agent API: ask before acting, use a scoped credential, report.

Depends on httpx, rfc8785, PyJWT and cryptography, never on the server's code.
"""

from stepup_client.client import StepupClient, token_file
from stepup_client.digest import canonical_json, parameters_digest
from stepup_client.dpop import DpopKey
from stepup_client.errors import (
    ApiError,
    ConnectionFailed,
    NotDpopBound,
    ParametersMismatch,
    ParametersNotSerializable,
    ProtocolError,
    RequestCancelled,
    RequestDenied,
    RequestExpired,
    RequestNotGranted,
    RequestRevoked,
    StepupClientError,
    WaitTimeout,
)
from stepup_client.events import Event, InvalidEvent, verify_event
from stepup_client.models import (
    ActionClass,
    Approvals,
    ApproverInfo,
    Credential,
    CredentialInfo,
    Delegation,
    Outcome,
    Request,
    Status,
)

__all__ = [
    "ActionClass",
    "ApiError",
    "Approvals",
    "ApproverInfo",
    "ConnectionFailed",
    "Credential",
    "CredentialInfo",
    "Delegation",
    "DpopKey",
    "Event",
    "InvalidEvent",
    "NotDpopBound",
    "Outcome",
    "ParametersMismatch",
    "ParametersNotSerializable",
    "ProtocolError",
    "Request",
    "RequestCancelled",
    "RequestDenied",
    "RequestExpired",
    "RequestNotGranted",
    "RequestRevoked",
    "Status",
    "StepupClient",
    "StepupClientError",
    "WaitTimeout",
    "canonical_json",
    "parameters_digest",
    "token_file",
    "verify_event",
]
