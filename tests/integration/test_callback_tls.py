"""Signed callbacks over TLS (docs/callbacks.md), on SQLite and PostgreSQL: the POST goes to the
address checked just before, the certificate is verified for the URL's name, and a receiver
trickling its TLS handshake is abandoned at the attempt's deadline too (review finding, issue
15: a timeout per socket read never fires on it)."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bot.callbacks import CallbackWorker
from core.model import ActionClass
from core.storage.database import Database
from tests.integration.test_callback_delivery import Trickler
from tests.integration.test_callbacks import outbox_rows
from tests.support import OWNER, build_engine, intent


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def make_tls(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A CA, and a certificate for ``localhost`` it signed: (ca, cert, key) files."""
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("test CA"))
        .issuer_name(_name("test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


@contextmanager
def https_receiver(cert: Path, key: Path, bodies: list[bytes]) -> Iterator[int]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            bodies.append(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def trickling_handshake(trickler: Trickler) -> Iterator[int]:
    """Reads the ClientHello, then sends a TLS record header announcing a long handshake
    message, and its bytes one every ``interval`` seconds."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.1)
    stop = threading.Event()

    def answer(conn: socket.socket) -> None:
        with conn:
            conn.recv(65536)
            record = b"\x16\x03\x03\x40\x00" + b"\x02\x00\x3f\xfc" + b"\x03\x03" * 8000
            for index in range(len(record)):
                if stop.is_set():
                    return
                try:
                    conn.sendall(record[index : index + 1])
                except OSError:
                    with trickler.lock:
                        trickler.closed += 1
                    return
                stop.wait(trickler.interval)

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with trickler.lock:
                trickler.connections += 1
            threading.Thread(target=answer, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield int(server.getsockname()[1])
    finally:
        stop.set()
        thread.join(timeout=5)
        server.close()


def deliver_once(db: Database, tmp_path: Path, url: str, ca: Path, **options: float) -> None:
    engine = build_engine(db, tmp_path)
    now = datetime.now(UTC)
    agent = engine.registry.authenticate(
        engine.registry.add("hook-bot", OWNER, by="t", now=now, callback_hosts=["localhost"])
    )
    engine.service.submit(
        agent, intent(agent, action_class=ActionClass.READ, callback_url=url), now=now
    )
    worker = CallbackWorker(
        engine.service,
        max_attempts=1,
        # localhost, as the system resolves it: the receivers listen on IPv4 only.
        resolver=lambda host, port: ["127.0.0.1"],
        ssl_context=ssl.create_default_context(cafile=str(ca)),
        **options,  # type: ignore[arg-type]
    )
    try:
        assert worker.run_once() == 1
    finally:
        worker.stop()


def test_https_to_the_checked_address_with_the_certificate_of_the_name(
    db: Database, tmp_path: Path
) -> None:
    ca, cert, key = make_tls(tmp_path)
    bodies: list[bytes] = []
    with https_receiver(cert, key, bodies) as port:
        deliver_once(db, tmp_path, f"https://localhost:{port}/hook", ca)
    [row] = outbox_rows(db)
    assert (row.status, row.last_error) == ("sent", None)
    assert len(bodies) == 1


def test_a_certificate_for_another_name_fails_the_attempt(db: Database, tmp_path: Path) -> None:
    _, cert, key = make_tls(tmp_path)
    (tmp_path / "other").mkdir()
    other_ca, _, _ = make_tls(tmp_path / "other")  # a CA that did not sign it
    bodies: list[bytes] = []
    with https_receiver(cert, key, bodies) as port:
        deliver_once(db, tmp_path, f"https://localhost:{port}/hook", other_ca)
    [row] = outbox_rows(db)
    assert row.status == "dead" and "CERTIFICATE_VERIFY_FAILED" in (row.last_error or "")
    assert bodies == []


def test_a_trickled_tls_handshake_is_abandoned_at_the_deadline(
    db: Database, tmp_path: Path
) -> None:
    ca, _, _ = make_tls(tmp_path)
    trickler = Trickler(interval=0.1)
    with trickling_handshake(trickler) as port:
        deliver_once(
            db, tmp_path, f"https://localhost:{port}/hook", ca, deadline_seconds=1.0,
            timeout_seconds=5.0,
        )  # fmt: skip
        [row] = outbox_rows(db)
        assert row.status == "dead"
        assert "abandoned: no complete answer within 1s" in (row.last_error or "")
    assert trickler.counts()[0] == 1
