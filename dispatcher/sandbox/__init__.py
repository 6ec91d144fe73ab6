"""Local FCM HTTP v1 and SendGrid v3 servers with fault injection and recording.

The real client libraries (firebase-admin, sendgrid) talk to them over HTTP exactly as to Google and
Twilio; only endpoint URLs and credentials change. See :class:`SandboxServer` (tests, in-process) and
:func:`run_sandbox` (the ``dispatcher sandbox`` command, ``python -m dispatcher.sandbox``).
"""

from __future__ import annotations

from dispatcher.sandbox.app import SandboxApp
from dispatcher.sandbox.control import SandboxClient, SandboxControlError
from dispatcher.sandbox.credentials import InvalidGrant, write_service_account
from dispatcher.sandbox.faults import FaultPlan, Faults, InvalidFaultPlan
from dispatcher.sandbox.server import SandboxServer, SandboxStartFailed, run_sandbox
from dispatcher.sandbox.webhook import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WebhookDeliveryFailed,
    generate_webhook_keypair,
    sign_event_webhook,
)

__all__ = [
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "FaultPlan",
    "Faults",
    "InvalidFaultPlan",
    "InvalidGrant",
    "SandboxApp",
    "SandboxClient",
    "SandboxControlError",
    "SandboxServer",
    "SandboxStartFailed",
    "WebhookDeliveryFailed",
    "generate_webhook_keypair",
    "run_sandbox",
    "sign_event_webhook",
    "write_service_account",
]
