"""The OAuth side of the FCM sandbox: service accounts it trusts and the access tokens it issues.

firebase-admin authenticates with a service-account key: google-auth signs a JWT assertion with the
account's RSA key and trades it at the account's ``token_uri`` for a bearer token. The sandbox plays
Google's token endpoint, so the exchange is exercised exactly as in production: the assertion's RS256
signature is checked against the public key of an account the sandbox generated, and the bearer tokens
it hands out are HMAC-signed so any sandbox worker can check them without shared memory.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from dispatcher.errors import DispatcherError

#: Lifetime of an access token, as Google's token endpoint reports it.
ACCESS_TOKEN_SECONDS = 3600
#: Clock skew tolerated on the assertion's ``iat``/``exp``.
CLOCK_SKEW_SECONDS = 300
#: The grant type google-auth uses for service-account assertions.
JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
#: The audience Google requires in a service-account assertion — developers.google.com/identity/protocols/
#: oauth2/service-account ("aud: ... always https://oauth2.googleapis.com/token"); google-auth sends it
#: whatever the account's ``token_uri`` says, so the sandbox can require it too.
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"
#: Longest an assertion may live (``exp - iat``) — same page: "a maximum of 1 hour after the issued time".
MAX_ASSERTION_SECONDS = 3600


class InvalidGrant(DispatcherError):
    """A token request carried an assertion the sandbox does not accept (answered as ``invalid_grant``)."""


@dataclass(frozen=True)
class TrustedAccount:
    """The public half of a service account the sandbox accepts assertions from."""

    key_id: str
    client_email: str
    public_key_pem: str

    def to_json(self) -> str:
        return json.dumps(
            {"key_id": self.key_id, "client_email": self.client_email, "public_key_pem": self.public_key_pem}
        )

    @classmethod
    def from_json(cls, text: str) -> TrustedAccount:
        raw = json.loads(text)
        return cls(raw["key_id"], raw["client_email"], raw["public_key_pem"])


_process_trust: dict[str, TrustedAccount] = {}
_process_trust_lock = threading.Lock()


def trust_account(account: TrustedAccount, keys_dir: Path | None = None) -> None:
    """Make every sandbox in this process (and, with ``keys_dir``, every sandbox using it) accept the key."""
    with _process_trust_lock:
        _process_trust[account.key_id] = account
    if keys_dir is not None:
        keys_dir.mkdir(parents=True, exist_ok=True)
        target = keys_dir / f"{account.key_id}.json"
        tmp = target.with_suffix(".tmp")
        tmp.write_text(account.to_json())
        tmp.replace(target)


def write_service_account(
    path: str | os.PathLike[str],
    *,
    token_uri: str,
    project_id: str = "dispatcher-sandbox",
    keys_dir: Path | None = None,
) -> Path:
    """Generate an RSA key, write a service-account JSON that firebase-admin accepts, trust its key.

    The key is trusted by every sandbox in this process; pass ``keys_dir`` (a sandbox's
    ``<records_dir>/keys``) to make a sandbox running in another process trust it too.
    """
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_id = uuid.uuid4().hex
    client_email = f"sandbox-{key_id[:8]}@{project_id}.iam.gserviceaccount.com"
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    info = {
        "type": "service_account",
        "project_id": project_id,
        "private_key_id": key_id,
        "private_key": private_pem,
        "client_email": client_email,
        "client_id": str(int(key_id[:15], 16)),
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
        "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
        "client_x509_cert_url": "https://www.googleapis.com/robot/v1/metadata/x509/" + client_email,
        "universe_domain": "googleapis.com",
    }
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(info, indent=2))
    os.chmod(target, 0o600)
    trust_account(TrustedAccount(key_id, client_email, public_pem), keys_dir)
    return target


def _b64url_decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


class TokenAuthority:
    """Checks JWT assertions, issues bearer tokens and checks them again on every FCM call."""

    def __init__(self, secret: bytes, keys_dir: Path | None = None) -> None:
        self._secret = secret
        self._keys_dir = keys_dir
        self._accounts: dict[str, TrustedAccount] = {}
        self._valid_until: dict[str, float] = {}

    # -- assertions --------------------------------------------------------------------------------
    def _account(self, key_id: str) -> TrustedAccount | None:
        account = self._accounts.get(key_id) or _process_trust.get(key_id)
        if account is None and self._keys_dir is not None:
            candidate = self._keys_dir / f"{key_id}.json"
            if candidate.is_file():
                account = TrustedAccount.from_json(candidate.read_text())
        if account is not None:
            self._accounts[key_id] = account
        return account

    def verify_assertion(self, assertion: str) -> str:
        """Return the client email of a valid, signed, unexpired assertion; raise :class:`InvalidGrant`."""
        try:
            header_b64, payload_b64, signature_b64 = assertion.split(".")
            header = json.loads(_b64url_decode(header_b64))
            payload = json.loads(_b64url_decode(payload_b64))
            signature = _b64url_decode(signature_b64)
        except ValueError:
            raise InvalidGrant("assertion is not a JWT") from None
        if header.get("alg") != "RS256":
            raise InvalidGrant("assertion must be signed with RS256")
        account = self._account(str(header.get("kid", "")))
        if account is None:
            raise InvalidGrant("Invalid JWT Signature.")
        public_key = serialization.load_pem_public_key(account.public_key_pem.encode())
        assert isinstance(public_key, rsa.RSAPublicKey)
        try:
            public_key.verify(
                signature, f"{header_b64}.{payload_b64}".encode(), padding.PKCS1v15(), hashes.SHA256()
            )
        except InvalidSignature:
            raise InvalidGrant("Invalid JWT Signature.") from None
        if payload.get("iss") != account.client_email:
            raise InvalidGrant("Invalid JWT: issuer does not match the key")
        if payload.get("aud") != GOOGLE_TOKEN_AUDIENCE:
            raise InvalidGrant(f"Invalid JWT: the audience (aud) must be {GOOGLE_TOKEN_AUDIENCE}")
        if not isinstance(payload.get("scope"), str) or not payload["scope"].strip():
            raise InvalidGrant("Invalid JWT: no scope (the space-separated scopes requested) in the claim set")
        try:
            issued, expires = float(payload["iat"]), float(payload["exp"])
        except (KeyError, TypeError, ValueError):
            raise InvalidGrant("Invalid JWT: iat and exp must be numbers") from None
        if expires - issued > MAX_ASSERTION_SECONDS or expires <= issued:
            raise InvalidGrant("Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable "
                               "timeframe. Check your iat and exp values in the JWT claim.")
        now = time.time()
        if expires < now - CLOCK_SKEW_SECONDS:
            raise InvalidGrant("Invalid JWT: Token must be a short-lived token and in a reasonable timeframe")
        if issued > now + CLOCK_SKEW_SECONDS:
            raise InvalidGrant("Invalid JWT: iat is in the future")
        return account.client_email

    # -- bearer tokens -----------------------------------------------------------------------------
    def _mac(self, body: str) -> str:
        digest = hmac.new(self._secret, body.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest[:18]).decode()

    def issue(self) -> str:
        """A new bearer token valid for :data:`ACCESS_TOKEN_SECONDS`."""
        body = f"ya29.sbx.{int(time.time()) + ACCESS_TOKEN_SECONDS}.{secrets.token_urlsafe(12)}"
        return f"{body}.{self._mac(body)}"

    def is_valid(self, token: str) -> bool:
        """Whether a bearer token was issued by a sandbox sharing our secret and has not expired.

        The answer for a token is cached, so the FCM hot path pays one dict lookup per call.
        """
        until = self._valid_until.get(token)
        if until is None:
            body, _, mac = token.rpartition(".")
            parts = body.split(".")
            if len(parts) != 4 or not hmac.compare_digest(mac, self._mac(body)):
                return False
            try:
                until = float(parts[2])
            except ValueError:
                return False
            if len(self._valid_until) > 100_000:
                self._valid_until.clear()
            self._valid_until[token] = until
        return until > time.time()
