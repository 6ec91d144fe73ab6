"""The FCM message of a push: built and encoded once by firebase-admin, a device's token spliced in.

The message for a (request, camera) pair is encoded once, by firebase-admin (the authority on the FCM
v1 JSON), with a placeholder token; each device's body is that template with its token spliced in.
"""

from __future__ import annotations

import secrets
import warnings
from datetime import UTC, datetime, timedelta

import orjson
from firebase_admin import messaging

from dispatcher.channels.content import PushContent
from dispatcher.channels.push.firebase_private import encode_message
from dispatcher.errors import ConfigurationError

# firebase-admin 7 deprecates ``Message.token`` in favour of installation ids; FCM v1 still takes
# registration tokens, which is what residents' devices register with us.
warnings.filterwarnings("ignore", message="Message.token is deprecated", category=DeprecationWarning)


def build_message(token: str, content: PushContent) -> messaging.Message:
    """The FCM message for one device, with the per-request collapse id on Android and iOS."""
    ttl = timedelta(seconds=content.ttl_seconds)
    priority = "high" if content.urgent else "normal"
    expires = int(datetime.now(UTC).timestamp()) + content.ttl_seconds
    return messaging.Message(
        token=token,
        notification=messaging.Notification(title=content.title, body=content.body),
        data=content.data,
        android=messaging.AndroidConfig(
            collapse_key=content.collapse_id,
            priority=priority,
            ttl=ttl,
            notification=messaging.AndroidNotification(
                tag=content.collapse_id, click_action=content.data["action"]
            ),
        ),
        apns=messaging.APNSConfig(
            headers={
                "apns-collapse-id": content.collapse_id,
                "apns-priority": "10" if content.urgent else "5",
                "apns-push-type": "alert",
                "apns-expiration": str(expires),
            },
            payload=messaging.APNSPayload(
                aps=messaging.Aps(category=content.data["action"].upper(), thread_id=content.collapse_id)
            ),
        ),
    )


class MessageTemplate:
    """A message encoded once by firebase-admin; ``body(token)`` splices one device's token in."""

    def __init__(self, content: PushContent) -> None:
        placeholder = f"dispatcher-token-{secrets.token_hex(16)}"
        raw = orjson.dumps({"message": encode_message(build_message(placeholder, content))})
        prefix, found, suffix = raw.partition(orjson.dumps(placeholder))
        if not found or orjson.dumps(placeholder) in suffix:
            raise ConfigurationError("the push template must hold the token placeholder exactly once")
        self._prefix = prefix
        self._suffix = suffix

    def body(self, token: str) -> bytes:
        return self._prefix + orjson.dumps(token) + self._suffix
