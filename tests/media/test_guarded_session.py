"""The connection guard: the address actually connected to is checked, over HTTP and TLS.

`check_addresses` refuses before connecting; this guard catches what a lookup between
that check and the connection (DNS rebinding) would slip past, so it is tested directly.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
import threading
from http.server import ThreadingHTTPServer

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gateway import media
from tests.media.hosts import JPEG, file


def test_a_connection_to_an_unlisted_private_address_is_closed_before_a_request_is_sent(hosts):
    session = media.guarded_session(media.allowed_networks(["127.0.0.2"]))

    with pytest.raises(media.PermanentMediaError, match=r"resolves to 127\.0\.0\.1: a non-public address"):
        session.get(hosts.carrier.url("/ME1.jpg"), timeout=2)

    assert hosts.carrier.requests == []
    hosts.cdn.route("/ok.jpg", file(JPEG, "image/jpeg"))
    assert session.get(hosts.cdn.url("/ok.jpg"), timeout=2).content == JPEG


@pytest.fixture
def tls_host(tmp_path, hosts):
    """The CDN host's handler behind TLS, with a certificate for 127.0.0.2 the test trusts."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "media test")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.2"))]),
                       critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    server = ThreadingHTTPServer(("127.0.0.2", 0), hosts.cdn.server.RequestHandlerClass)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"https://127.0.0.2:{server.server_address[1]}", str(cert_path)
    server.shutdown()
    server.server_close()


def test_tls_still_verifies_the_certificate_through_the_guard(hosts, tls_host):
    base, trusted = tls_host
    hosts.cdn.route("/ok.jpg", file(JPEG, "image/jpeg"))
    session = media.guarded_session(media.allowed_networks(["127.0.0.2"]))

    assert session.get(base + "/ok.jpg", timeout=2, verify=trusted).content == JPEG
    with pytest.raises(requests.exceptions.SSLError):
        session.get(base + "/ok.jpg", timeout=2)  # the system's CAs do not know this certificate
    with pytest.raises(media.PermanentMediaError):
        media.guarded_session([]).get(base + "/ok.jpg", timeout=2, verify=trusted)
