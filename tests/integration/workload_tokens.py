"""A local OIDC provider for tests: a real HTTP server on loopback serving its discovery
document and JWKS, whose key can be rotated; and JWT-SVIDs signed with a SPIFFE bundle's key."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


@dataclass
class SigningKey:
    kid: str
    key: PrivateKey
    alg: str

    @classmethod
    def rsa(cls, kid: str | None = None) -> SigningKey:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return cls(kid or "rsa-" + uuid.uuid4().hex[:8], key, "RS256")

    @classmethod
    def ec(cls, kid: str | None = None) -> SigningKey:
        return cls(
            kid or "ec-" + uuid.uuid4().hex[:8], ec.generate_private_key(ec.SECP256R1()), "ES256"
        )

    def public_jwk(self, **extra: Any) -> dict[str, Any]:
        public = self.key.public_key()
        if isinstance(public, rsa.RSAPublicKey):
            text = RSAAlgorithm.to_jwk(public)
        else:
            text = ECAlgorithm.to_jwk(public)
        jwk: dict[str, Any] = json.loads(text)
        return jwk | {"kid": self.kid, "alg": self.alg, "use": "sig"} | extra

    def sign(self, claims: dict[str, Any], **header: Any) -> str:
        return jwt.encode(claims, self.key, algorithm=self.alg, headers={"kid": self.kid, **header})


@dataclass
class LocalIssuer:
    """An OIDC provider on 127.0.0.1: ``/.well-known/openid-configuration`` and ``/jwks``."""

    url: str = ""
    keys: list[SigningKey] = field(default_factory=list)
    fetches: dict[str, int] = field(default_factory=dict)  # path -> how many GETs
    redirect_jwks: str | None = None  # answer /jwks with a 302 there

    @property
    def key(self) -> SigningKey:
        return self.keys[-1]

    def rotate(self) -> SigningKey:
        """A new key replaces the old one in the JWKS."""
        self.keys = [SigningKey.rsa()]
        return self.key

    def token(
        self,
        sub: str,
        *,
        aud: str | list[str] = "stepup",
        lifetime: int = 300,
        now: float | None = None,
        key: SigningKey | None = None,
        **claims: Any,
    ) -> str:
        at = time.time() if now is None else now
        body = {"iss": self.url, "sub": sub, "aud": aud, "iat": int(at), "exp": int(at) + lifetime}
        return (key or self.key).sign(body | claims)

    def document(self, path: str) -> tuple[int, dict[str, Any] | None, dict[str, str]]:
        self.fetches[path] = self.fetches.get(path, 0) + 1
        if path == "/.well-known/openid-configuration":
            return 200, {"issuer": self.url, "jwks_uri": self.url + "/jwks"}, {}
        if path == "/jwks":
            if self.redirect_jwks is not None:
                return 302, None, {"Location": self.redirect_jwks}
            return 200, {"keys": [k.public_jwk() for k in self.keys]}, {}
        return 404, None, {}


@contextmanager
def serving(issuer: LocalIssuer | None = None) -> Iterator[LocalIssuer]:
    served = issuer or LocalIssuer(keys=[SigningKey.rsa()])

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, body, headers = served.document(self.path)
            payload = json.dumps(body).encode() if body is not None else b""
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    served.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield served
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def spiffe_bundle(*keys: SigningKey) -> str:
    """A SPIFFE trust bundle (a JWKS whose JWT-SVID keys say ``use: jwt-svid``)."""
    return json.dumps(
        {
            "keys": [k.public_jwk(use="jwt-svid") for k in keys],
            "spiffe_sequence": 1,
            "spiffe_refresh_hint": 300,
        }
    )


def jwt_svid(key: SigningKey, spiffe_id: str, *, aud: str = "stepup", lifetime: int = 300) -> str:
    """A JWT-SVID (SPIFFE JWT-SVID spec): sub the SPIFFE ID, aud, exp; typ JWT."""
    at = int(time.time())
    return key.sign({"sub": spiffe_id, "aud": [aud], "exp": at + lifetime, "iat": at}, typ="JWT")
