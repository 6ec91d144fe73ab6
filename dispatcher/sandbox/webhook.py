"""SendGrid's Signed Event Webhook: keys, signatures and the events the sandbox posts.

SendGrid signs each event POST with ECDSA P-256 over SHA-256 of ``timestamp + raw body``, sends the
base64 DER signature in ``X-Twilio-Email-Event-Webhook-Signature`` and the timestamp in
``X-Twilio-Email-Event-Webhook-Timestamp``, and shows the verification key as base64 DER
SubjectPublicKeyInfo. The sandbox does the same, so the engine's receiver verifies sandbox events with
exactly the code that verifies SendGrid's.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from dispatcher.errors import DispatcherError

SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"
#: Event types the sandbox can report for a recipient.
EVENT_TYPES = frozenset({"delivered", "bounce", "dropped", "spamreport", "unsubscribe", "group_unsubscribe",
                         "deferred", "processed"})
#: Events per webhook POST (SendGrid batches events too).
EVENTS_PER_POST = 500


class WebhookDeliveryFailed(DispatcherError):
    """The configured event webhook did not answer 2xx."""


def generate_webhook_keypair() -> tuple[ec.EllipticCurvePrivateKey, str]:
    """A new P-256 key pair: the private key and the public key as SendGrid shows it (base64 DER SPKI)."""
    private_key = ec.generate_private_key(ec.SECP256R1())
    return private_key, public_key_text(private_key)


def public_key_text(private_key: ec.EllipticCurvePrivateKey) -> str:
    der = private_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode()


def load_or_create_webhook_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """The sandbox's signing key, kept as PEM at ``path`` so restarts and workers share it."""
    if path.is_file():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if isinstance(key, ec.EllipticCurvePrivateKey):
            return key
    key, _ = generate_webhook_keypair()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ))
    tmp.chmod(0o600)
    tmp.replace(path)
    return key


def sign_event_webhook(private_key: ec.EllipticCurvePrivateKey, payload: bytes, timestamp: str) -> str:
    """The ``X-Twilio-Email-Event-Webhook-Signature`` value for ``payload`` sent at ``timestamp``."""
    signature = private_key.sign(timestamp.encode() + payload, ec.ECDSA(hashes.SHA256()))
    return base64.b64encode(signature).decode()


def build_event(recipient: dict[str, Any], event: str, timestamp: int) -> dict[str, Any]:
    """One SendGrid event for a recorded recipient, custom_args as top-level keys as SendGrid does."""
    payload: dict[str, Any] = dict(recipient.get("custom_args") or {})
    payload.update({
        "email": recipient["email"],
        "timestamp": timestamp,
        "smtp-id": f"<{recipient['message_id']}@sandbox.dispatcher.invalid>",
        "event": event,
        "sg_event_id": secrets.token_urlsafe(16),
        "sg_message_id": recipient["sg_message_id"],
    })
    if recipient.get("categories"):
        payload["category"] = recipient["categories"]
    if recipient.get("asm_group_id") is not None:
        payload["asm_group_id"] = recipient["asm_group_id"]
    if event == "delivered":
        payload.update({"response": "250 OK", "ip": "127.0.0.1", "tls": 1})
    elif event == "bounce":
        payload.update({"type": "bounce", "status": "5.1.1", "bounce_classification": "Invalid Address",
                        "reason": "550 5.1.1 The email account that you tried to reach does not exist.",
                        "ip": "127.0.0.1", "tls": 1})
    elif event == "dropped":
        payload["reason"] = "Bounced Address"
    elif event == "deferred":
        payload.update({"response": "400 try again later", "attempt": "1"})
    elif event == "group_unsubscribe":
        payload.setdefault("asm_group_id", 1)
    return payload


def signed_request(private_key: ec.EllipticCurvePrivateKey, events: list[dict[str, Any]],
                   timestamp: int | None = None) -> tuple[bytes, dict[str, str]]:
    """The body and headers of one signed webhook POST."""
    body = json.dumps(events, separators=(",", ":")).encode()
    stamp = str(timestamp if timestamp is not None else int(time.time()))
    headers = {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: sign_event_webhook(private_key, body, stamp),
        TIMESTAMP_HEADER: stamp,
        "User-Agent": "SendGrid Event API (dispatcher sandbox)",
    }
    return body, headers


async def post_events(url: str, private_key: ec.EllipticCurvePrivateKey, events: Iterable[dict[str, Any]],
                      client: httpx.AsyncClient | None = None) -> int:
    """POST events to ``url`` in signed batches; returns how many were posted."""
    pending = list(events)
    own_client = client is None
    http = client or httpx.AsyncClient(timeout=30.0)
    posted = 0
    try:
        for start in range(0, len(pending), EVENTS_PER_POST):
            batch = pending[start:start + EVENTS_PER_POST]
            body, headers = signed_request(private_key, batch)
            response = await http.post(url, content=body, headers=headers)
            if not 200 <= response.status_code < 300:
                raise WebhookDeliveryFailed(
                    f"event webhook answered {response.status_code} after {posted} events were posted"
                )
            posted += len(batch)
    finally:
        if own_client:
            await http.aclose()
    return posted
