"""The push channel's own HTTP client over TLS, as it runs against https://fcm.googleapis.com.

The sandbox serves https with a self-signed certificate made here; the client trusts it only through
``SSL_CERT_FILE`` (the lean client's default context) and ``REQUESTS_CA_BUNDLE`` (google-auth's token
exchange), the same knobs a deployment behind a TLS-inspecting proxy would use. The refusals prove the
client verifies the chain and the host name rather than merely speaking TLS.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from google.auth.exceptions import TransportError

from dispatcher.channels import push
from dispatcher.channels.push import PushChannel, lanes
from dispatcher.config import Settings
from dispatcher.contract import CommunityRequest, parse_request
from dispatcher.ledger import Status
from dispatcher.sandbox import SandboxServer
from tests.factories import request_payload
from tests.recipients import device

pytestmark = pytest.mark.filterwarnings("ignore:Message.token is deprecated:DeprecationWarning")

TARGETS = [
    device(1, ("tls-a",), True),
    device(2, ("tls-b", "tls-c"), False),
    device(3, ("tls-d",), True),
    device(4, ("tls-e",), False),
]
TOKENS = {token for _, target in TARGETS for token in target.tokens}


@dataclass(frozen=True)
class Certificate:
    cert: Path
    key: Path


def make_certificate(directory: Path, name: str, *, ips: tuple[str, ...] = ("127.0.0.1",),
                     dns: tuple[str, ...] = ("localhost",)) -> Certificate:
    """A self-signed server certificate (its own trust anchor) for the given addresses, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"dispatcher sandbox {name}")])
    now = datetime.now(UTC)
    alt_names: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    alt_names += [x509.DNSName(host) for host in dns]
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False, key_agreement=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    paths = Certificate(directory / f"{name}.pem", directory / f"{name}.key")
    paths.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths.key.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()))
    return paths


@pytest.fixture
def tls_sandbox(tmp_path: Path) -> Iterator[tuple[SandboxServer, Certificate]]:
    """A sandbox serving https with a certificate for 127.0.0.1 and localhost."""
    certificate = make_certificate(tmp_path, "sandbox")
    with SandboxServer(tmp_path / "records", ssl_certfile=certificate.cert,
                       ssl_keyfile=certificate.key) as server:
        yield server, certificate


@pytest.fixture
def channels() -> Iterator[list[PushChannel]]:
    """Channels made by a test, closed at its end (their loop thread and connections)."""
    made: list[PushChannel] = []
    yield made
    for channel in made:
        channel.close()


def _trust(monkeypatch: pytest.MonkeyPatch, lean_client: Path, token_exchange: Path) -> None:
    """Point both trust stores before a channel makes its SSL context (on its first send)."""
    monkeypatch.setenv("SSL_CERT_FILE", str(lean_client))
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(token_exchange))


def _request() -> CommunityRequest:
    return parse_request(request_payload("req-tls-1"))


def _until() -> datetime:
    return datetime.now(UTC) + timedelta(days=3)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_a_batch_over_tls_is_accepted_and_recorded(tls_sandbox: tuple[SandboxServer, Certificate],
                                                   channels: list[PushChannel], monkeypatch: pytest.MonkeyPatch,
                                                   host: str) -> None:
    sandbox, certificate = tls_sandbox
    _trust(monkeypatch, certificate.cert, certificate.cert)
    settings = sandbox.configure(Settings())
    assert settings.fcm_endpoint.startswith("https://127.0.0.1:")
    settings = settings.with_(fcm_endpoint=f"https://{host}:{sandbox.port}")
    channel = PushChannel(settings)
    channels.append(channel)

    result = channel.send(_request(), _until(), dict(TARGETS))

    assert result.messages == result.accepted == result.calls == len(TOKENS)
    assert not result.retry and not result.retired_tokens and result.retry_after is None
    assert {rid: o.status for rid, o in result.outcomes.items()} == {rid: Status.SENT for rid, _ in TARGETS}
    records = sandbox.records("fcm")
    assert sorted(r["token"] for r in records) == sorted(TOKENS)
    assert {r["message"]["data"]["request_id"] for r in records} == {"req-tls-1"}
    assert sandbox.stats()["calls"].get("token.issued") == 1
    # The same connections carry a second batch (kept alive over TLS, no new token).
    again = channel.send(_request(), _until(), dict(TARGETS[:1]))
    assert again.accepted == 1 and len(sandbox.records("fcm")) == len(TOKENS) + 1


def test_a_certificate_the_client_does_not_trust_is_refused(tls_sandbox: tuple[SandboxServer, Certificate],
                                                            channels: list[PushChannel], tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    sandbox, certificate = tls_sandbox
    stranger = make_certificate(tmp_path, "stranger")  # same names, another key: not the sandbox's
    # The token exchange trusts the sandbox, so only the lean client's own verification is under test.
    _trust(monkeypatch, stranger.cert, certificate.cert)
    channel = PushChannel(sandbox.configure(Settings()))
    channels.append(channel)

    result = channel.send(_request(), _until(), dict(TARGETS))

    assert sorted(result.retry) == [rid for rid, _ in TARGETS] and not result.outcomes
    assert result.accepted == 0 and not result.retired_tokens and not result.quota_exceeded
    assert result.retry_after == push.TEMPORARY_DEFAULT_WAIT_SECONDS
    assert result.calls == len(TOKENS) * lanes.INLINE_ATTEMPTS, "each message was tried and refused"
    assert sandbox.records("fcm") == []
    calls = sandbox.stats()["calls"]
    assert calls.get("token.issued") == 1, "the access token was fetched: FCM itself was refused"


def test_a_trusted_certificate_for_another_host_name_is_refused(tmp_path: Path, channels: list[PushChannel],
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    only_ip = make_certificate(tmp_path, "only-ip", dns=())
    with SandboxServer(tmp_path / "records", ssl_certfile=only_ip.cert, ssl_keyfile=only_ip.key) as sandbox:
        _trust(monkeypatch, only_ip.cert, only_ip.cert)
        # Tokens from https://127.0.0.1 (named in the certificate); messages to https://localhost (not named).
        settings = sandbox.configure(Settings()).with_(fcm_endpoint=f"https://localhost:{sandbox.port}")
        channel = PushChannel(settings)
        channels.append(channel)
        result = channel.send(_request(), _until(), dict(TARGETS[:2]))
        assert sorted(result.retry) == [1, 2] and not result.outcomes and result.accepted == 0
        assert sandbox.records("fcm") == []
        assert sandbox.stats()["calls"].get("token.issued") == 1


def test_the_token_exchange_refuses_a_certificate_it_does_not_trust(
        tls_sandbox: tuple[SandboxServer, Certificate], channels: list[PushChannel], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Without an access token nothing is sent: the batch fails whole and its leased rows stay unsent."""
    sandbox, certificate = tls_sandbox
    stranger = make_certificate(tmp_path, "stranger")
    _trust(monkeypatch, certificate.cert, stranger.cert)
    channel = PushChannel(sandbox.configure(Settings()))
    channels.append(channel)
    with pytest.raises(TransportError, match="CERTIFICATE_VERIFY_FAILED"):
        channel.send(_request(), _until(), dict(TARGETS))
    assert sandbox.records("fcm") == [] and "token.issued" not in sandbox.stats()["calls"]
