"""Signed SendGrid event webhook posts for tests: a key pair, signing as SendGrid does, and posting."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any

import httpx
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from dispatcher.preferences.signature import SIGNATURE_HEADER, TIMESTAMP_HEADER
from dispatcher.preferences.webhook import EventWebhookApp

PRIVATE_KEY = ec.generate_private_key(ec.SECP256R1())
OTHER_KEY = ec.generate_private_key(ec.SECP256R1())


def public_key_text(key: ec.EllipticCurvePrivateKey) -> str:
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode()


def signed(events: Any, key: ec.EllipticCurvePrivateKey = PRIVATE_KEY, timestamp: int | None = None,
           body: bytes | None = None) -> tuple[bytes, dict[str, str]]:
    payload = body if body is not None else json.dumps(events).encode()
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    signature = key.sign(stamp.encode() + payload, ec.ECDSA(hashes.SHA256()))
    return payload, {SIGNATURE_HEADER: base64.b64encode(signature).decode(), TIMESTAMP_HEADER: stamp,
                     "Content-Type": "application/json"}


def post(app: EventWebhookApp, body: bytes, headers: dict[str, str], path: str = "/sendgrid/events") -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://webhook") as client:
            return await client.post(path, content=body, headers=headers)

    return asyncio.run(go())


def event(kind: str, email: str, event_id: str | None, **extra: Any) -> dict[str, Any]:
    """One SendGrid event; ``event_id`` ``None`` leaves ``sg_event_id`` out."""
    fields: dict[str, Any] = {"email": email, "event": kind, "timestamp": int(time.time()), **extra}
    if event_id is not None:
        fields["sg_event_id"] = event_id
    return fields
