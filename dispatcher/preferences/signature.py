"""Verification of SendGrid's Signed Event Webhook.

SendGrid signs ``timestamp + raw body`` with ECDSA P-256 over SHA-256, sends the base64 DER signature
and the timestamp in two headers, and shows the verification key as base64 DER SubjectPublicKeyInfo
(PEM is accepted too). A post is accepted only if the signature matches and the timestamp is recent,
so a captured post cannot be replayed later (and a replay inside the window is harmless anyway).
"""

from __future__ import annotations

import base64
import binascii
import time

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from dispatcher.errors import ConfigurationError, WebhookRejected

SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"
#: A post signed longer ago (or further in the future) than this is refused as stale.
MAX_SIGNATURE_AGE_SECONDS = 600


def load_public_key(text: str) -> ec.EllipticCurvePublicKey:
    """The webhook's verification key, from SendGrid's base64 DER or from PEM."""
    try:
        stripped = text.strip()
        if stripped.startswith("-----BEGIN"):
            key = serialization.load_pem_public_key(stripped.encode())
        else:
            key = serialization.load_der_public_key(base64.b64decode(stripped, validate=True))
    except (ValueError, binascii.Error, TypeError):
        raise ConfigurationError("SENDGRID_WEBHOOK_PUBLIC_KEY is not a public key") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ConfigurationError("SENDGRID_WEBHOOK_PUBLIC_KEY must be an ECDSA P-256 public key")
    return key


def verify_event_webhook(
    public_key: ec.EllipticCurvePublicKey,
    payload: bytes,
    signature: str | None,
    timestamp: str | None,
    *,
    now: float | None = None,
    max_age_seconds: int = MAX_SIGNATURE_AGE_SECONDS,
) -> None:
    """Return if ``payload`` was signed by SendGrid at ``timestamp`` recently; else raise WebhookRejected."""
    if not signature or not timestamp:
        raise WebhookRejected("event webhook post is not signed")
    try:
        signed_at = int(timestamp)
        der = base64.b64decode(signature, validate=True)
    except (ValueError, binascii.Error):
        raise WebhookRejected("event webhook signature or timestamp is malformed") from None
    current = time.time() if now is None else now
    if abs(current - signed_at) > max_age_seconds:
        raise WebhookRejected("event webhook signature is stale")
    try:
        public_key.verify(der, timestamp.encode() + payload, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        raise WebhookRejected("event webhook signature does not match") from None
