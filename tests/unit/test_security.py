"""SASL_SSL settings reach both kinds of client: confluent-kafka (librdkafka keys) and Faust
(aiokafka through `broker_credentials`), checked with a real CA, a client certificate and an
in-memory TLS handshake."""

from __future__ import annotations

import datetime as dt
import ssl
import tempfile
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from pydantic import ValidationError

from loanstream.config import KafkaSettings
from loanstream.streams import faust_app

BROKER = "kafka.test"
KEY_PASSWORD = "key-s3cret"


def issue(
    name: str, folder: Path, ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None = None
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A certificate for `name` signed by `ca` (self-signed CA if None), written as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca[0].subject if ca else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca is None, path_length=None), critical=True)
    )
    if ca is None:
        usage = x509.KeyUsage(False, False, False, False, False, True, True, False, False)
        builder = builder.add_extension(usage, critical=True)
    else:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), False)
    cert = builder.sign(ca[1] if ca else key, hashes.SHA256())
    (folder / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    encryption = serialization.BestAvailableEncryption(KEY_PASSWORD.encode())
    (folder / f"{name}.key").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    )
    return cert, key


@pytest.fixture
def sasl_ssl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> KafkaSettings:
    """The environment of docs/deployment.md: SASL_SSL with SCRAM-SHA-512 and mutual TLS."""
    ca = issue("ca", tmp_path)
    issue(BROKER, tmp_path, ca)
    issue("client", tmp_path, ca)
    for key, value in {
        "BOOTSTRAP_SERVERS": f"{BROKER}:9093",
        "SECURITY_PROTOCOL": "SASL_SSL",
        "SASL_MECHANISM": "SCRAM-SHA-512",
        "SASL_USERNAME": "scorer",
        "SASL_PASSWORD": "s3cret",
        "SSL_CA_LOCATION": str(tmp_path / "ca.pem"),
        "SSL_CERTIFICATE_LOCATION": str(tmp_path / "client.pem"),
        "SSL_KEY_LOCATION": str(tmp_path / "client.key"),
        "SSL_KEY_PASSWORD": KEY_PASSWORD,
    }.items():
        monkeypatch.setenv(f"LOANSTREAM_KAFKA_{key}", value)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # Faust's data dir goes here
    return KafkaSettings()


def faust_auth(kafka: KafkaSettings) -> dict[str, object]:
    """What Faust hands aiokafka's consumers and producers for this app's settings."""
    conf = faust_app(kafka, "security-test", 10.0, 60.0).conf
    return dict(credentials_to_aiokafka_auth(conf.broker_credentials, conf.ssl_context))


def handshake(client: ssl.SSLContext, folder: Path) -> Any:
    """TLS between `client` and a broker stand-in that demands a client certificate, in memory;
    returns the certificate the broker saw."""
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(folder / f"{BROKER}.pem", folder / f"{BROKER}.key", KEY_PASSWORD)
    server.load_verify_locations(folder / "ca.pem")
    server.verify_mode = ssl.CERT_REQUIRED
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    ours = client.wrap_bio(c_in, c_out, server_hostname=BROKER)
    theirs = server.wrap_bio(s_in, s_out, server_side=True)
    done = {id(ours): False, id(theirs): False}
    for _ in range(10):
        for side in (ours, theirs):
            try:
                side.do_handshake()
                done[id(side)] = True
            except ssl.SSLWantReadError:
                pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            break
    assert all(done.values()), "the TLS handshake did not finish"
    return theirs.getpeercert()


def test_confluent_clients_get_every_sasl_ssl_key(sasl_ssl: KafkaSettings, tmp_path: Path) -> None:
    assert sasl_ssl.confluent() == {
        "bootstrap.servers": f"{BROKER}:9093",
        "client.id": "loanstream",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "scorer",
        "sasl.password": "s3cret",
        "ssl.ca.location": str(tmp_path / "ca.pem"),
        "ssl.certificate.location": str(tmp_path / "client.pem"),
        "ssl.key.location": str(tmp_path / "client.key"),
        "ssl.key.password": KEY_PASSWORD,
    }


def test_faust_gets_the_same_sasl_credentials(sasl_ssl: KafkaSettings) -> None:
    auth = faust_auth(sasl_ssl)
    assert {k: v for k, v in auth.items() if k != "ssl_context"} == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "scorer",
        "sasl_plain_password": "s3cret",
    }
    context = auth["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


def test_faust_tls_trusts_the_ca_and_presents_the_client_certificate(
    sasl_ssl: KafkaSettings, tmp_path: Path
) -> None:
    context = faust_auth(sasl_ssl)["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    peer = handshake(context, tmp_path)
    assert peer["subject"] == ((("commonName", "client"),),)


def test_faust_tls_refuses_a_broker_the_ca_did_not_sign(
    sasl_ssl: KafkaSettings, tmp_path: Path
) -> None:
    other = tmp_path / "other"
    other.mkdir()
    issue(BROKER, other, issue("ca", other))  # same name, another CA
    (other / "ca.pem").write_bytes((tmp_path / "ca.pem").read_bytes())  # it trusts our client
    context = faust_auth(sasl_ssl)["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(context, other)


@pytest.mark.parametrize(
    ("protocol", "faust_protocol"),
    [("PLAINTEXT", "PLAINTEXT"), ("SSL", "SSL"), ("SASL_PLAINTEXT", "SASL_PLAINTEXT")],
)
def test_every_protocol_reaches_faust(
    protocol: str, faust_protocol: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    kafka = KafkaSettings(
        security_protocol=protocol, sasl_mechanism="SCRAM-SHA-256", sasl_username="u"
    )
    auth = faust_auth(kafka)
    assert auth["security_protocol"] == kafka.confluent()["security.protocol"] == faust_protocol
    if protocol.startswith("SASL"):
        assert auth["sasl_mechanism"] == kafka.confluent()["sasl.mechanism"] == "SCRAM-SHA-256"


def test_sasl_without_a_mechanism_is_refused_or_the_same_for_both_clients(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """librdkafka's default mechanism is GSSAPI, Faust's is PLAIN: they must not differ."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    try:
        kafka = KafkaSettings(security_protocol="SASL_SSL", sasl_username="u", sasl_password="p")
    except ValidationError:
        return  # refusing it is a fix too
    confluent = kafka.confluent().get("sasl.mechanism", "GSSAPI")  # librdkafka's default
    assert faust_auth(kafka)["sasl_mechanism"] == confluent
