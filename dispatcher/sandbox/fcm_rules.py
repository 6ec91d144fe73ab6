"""What FCM v1 refuses in a ``messages:send`` body: Google's published schema plus the few prose rules.

The schema part comes from Google's discovery document for ``fcm`` v1 (vendored in
``dispatcher/sandbox/descriptions/``), checked by :class:`~dispatcher.sandbox.discovery.DescriptionChecker`.
The rules below are the ones FCM states only in prose; each names its source. The sandbox and the tests
of every message the engine builds call :func:`fcm_request_problem`, so both hold the same line.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from dispatcher.sandbox.discovery import DescriptionChecker, SchemaProblem, load_description

#: "Maximum payload for both message types is 4096 bytes" — firebase.google.com/docs/cloud-messaging/
#: customize-messages/set-message-type. FCM does not publish how it counts; the sandbox counts the UTF-8
#: bytes of every key and value of ``data`` and ``android.data`` and of every string in ``notification``
#: and ``android.notification`` (what reaches the device as the payload; targets and options do not).
MAX_PAYLOAD_BYTES = 4096
#: Data keys FCM reserves — the discovery document's own description of ``Message.data``: "The key should
#: not be a reserved word ("from", "message_type", or any word starting with "google." or
#: "gcm.notification.")".
RESERVED_DATA_KEYS = frozenset({"from", "message_type"})
RESERVED_DATA_PREFIXES = ("google.", "gcm.notification.")
#: The message targets, of which exactly one is required — FCM v1 reference, ``Message`` "Union field
#: target ... can be only one of the following: token, topic, condition" (and ``fid``, its successor).
TARGETS = ("token", "fid", "topic", "condition")
#: APNs alert strings — Apple, "Generating a remote notification", payload key reference: ``alert`` is a
#: string or a dictionary whose ``title``, ``subtitle`` and ``body`` are strings.
APNS_ALERT_STRINGS = ("title", "subtitle", "body", "launch-image", "title-loc-key", "subtitle-loc-key",
                      "loc-key")


@cache
def fcm_checker() -> DescriptionChecker:
    """The checker over the vendored FCM v1 discovery document (built once)."""
    return DescriptionChecker(load_description())


def payload_bytes(message: dict[str, Any]) -> int:
    """The payload size of a message as counted against :data:`MAX_PAYLOAD_BYTES` (see there)."""
    total = 0
    android = message.get("android") or {}
    for mapping in (message.get("data"), android.get("data"), message.get("notification"),
                    android.get("notification")):
        if isinstance(mapping, dict):
            for key, value in mapping.items():
                total += len(key.encode())
                if isinstance(value, str):
                    total += len(value.encode())
    return total


def _reserved_key(data: Any) -> str | None:
    if not isinstance(data, dict):
        return None
    for key in data:
        if key in RESERVED_DATA_KEYS or key.startswith(RESERVED_DATA_PREFIXES):
            return str(key)
    return None


def _apns_alert_problem(apns: Any) -> SchemaProblem | None:
    payload = apns.get("payload") if isinstance(apns, dict) else None
    aps = payload.get("aps") if isinstance(payload, dict) else None
    if aps is None:
        return None
    if not isinstance(aps, dict):
        return SchemaProblem("Invalid value at 'message.apns.payload.aps': expected an object.",
                             "message.apns.payload.aps")
    alert = aps.get("alert")
    if alert is None or isinstance(alert, str):
        return None
    if not isinstance(alert, dict):
        return SchemaProblem("Invalid value at 'message.apns.payload.aps.alert': expected a string or an object.",
                             "message.apns.payload.aps.alert")
    for key in APNS_ALERT_STRINGS:
        if key in alert and not isinstance(alert[key], str):
            field = f"message.apns.payload.aps.alert.{key}"
            return SchemaProblem(f"Invalid value at '{field}': expected a string.", field)
    return None


def message_rule_problem(message: dict[str, Any]) -> SchemaProblem | None:
    """The first prose-only rule a (schema-valid) message breaks, or None."""
    targets = [name for name in TARGETS if name in message]
    if len(targets) != 1:
        return SchemaProblem("Exactly one of fid, token, topic or condition must be specified.", "message")
    target = message[targets[0]]
    if not target:
        return SchemaProblem(f"Invalid value for {targets[0]}.", f"message.{targets[0]}")
    android = message.get("android") or {}
    for path, data in (("message.data", message.get("data")), ("message.android.data", android.get("data"))):
        key = _reserved_key(data)
        if key is not None:
            return SchemaProblem(f"Invalid data payload key: \"{key}\" is a reserved key.", f"{path}.{key}")
    size = payload_bytes(message)
    if size > MAX_PAYLOAD_BYTES:
        return SchemaProblem(f"Message is too big: the payload is {size} bytes, at most {MAX_PAYLOAD_BYTES}.",
                             "message")
    return _apns_alert_problem(message.get("apns"))


def fcm_request_problem(request: Any) -> SchemaProblem | None:
    """The first thing FCM would refuse about a ``messages:send`` body, or None when it would accept it."""
    if not isinstance(request, dict):
        return SchemaProblem("Invalid JSON payload received. Expected an object.", "body")
    if not isinstance(request.get("message"), dict):
        return SchemaProblem("Invalid JSON payload received. 'message' is required.", "message")
    problem = fcm_checker().problem("SendMessageRequest", request)
    if problem is not None:
        return problem
    return message_rule_problem(request["message"])


def is_validate_only(request: dict[str, Any]) -> bool:
    """Whether a (valid) request asks to be validated only; the field may be spelled either way."""
    return bool(request.get("validateOnly") or request.get("validate_only"))
