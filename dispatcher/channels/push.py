"""Push notifications through FCM HTTP v1, sent by firebase-admin.

One message per device token, at most 500 per ``send_each`` call. The API endpoint comes from the
settings (``FCM_ENDPOINT``): production leaves the default, the sandbox sets its own; firebase-admin
hard-codes the URL, so the client's URL attribute is set from configuration once, at start.
Errors sort into three kinds: a dead token (retired, never used again), a temporary failure (the
batch's residents are retried later, honouring Retry-After), and a permanent one (the row fails).
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import firebase_admin
from firebase_admin import credentials, exceptions, messaging

from dispatcher.channels.content import PushContent, push_content
from dispatcher.config import FCM_MAX_BATCH, Settings
from dispatcher.contract import CommunityRequest
from dispatcher.errors import ConfigurationError
from dispatcher.ledger import Outcome, Status

# firebase-admin 7 deprecates ``Message.token`` in favour of installation ids; FCM v1 still takes
# registration tokens, which is what residents' devices register with us.
warnings.filterwarnings("ignore", message="Message.token is deprecated", category=DeprecationWarning)

_app_counter = itertools.count()
_RETRYABLE = (
    messaging.QuotaExceededError,
    exceptions.UnavailableError,
    exceptions.InternalError,
    exceptions.ResourceExhaustedError,
    exceptions.DeadlineExceededError,
    exceptions.UnknownError,
)


@dataclass(frozen=True)
class PushTarget:
    """One resident's live device tokens, and whether they have a camera."""

    resident_id: int
    tokens: tuple[str, ...]
    has_camera: bool


@dataclass
class PushResult:
    """What happened to one batch."""

    outcomes: dict[int, Outcome] = field(default_factory=dict)
    #: token → reason, to retire: FCM says the token is dead.
    retired_tokens: dict[str, str] = field(default_factory=dict)
    #: residents none of whose tokens got through because of a temporary failure.
    retry: list[int] = field(default_factory=list)
    #: the longest Retry-After the provider asked for, in seconds.
    retry_after: float | None = None
    quota_exceeded: bool = False
    messages: int = 0


def build_message(token: str, content: PushContent) -> messaging.Message:
    """The FCM message for one device, with the per-request collapse id on Android and iOS."""
    ttl = timedelta(seconds=content.ttl_seconds)
    priority = "high" if content.urgent else "normal"
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
                "apns-expiration": str(int(datetime.now().timestamp()) + content.ttl_seconds),
            },
            payload=messaging.APNSPayload(
                aps=messaging.Aps(category=content.data["action"].upper(), thread_id=content.collapse_id)
            ),
        ),
    )


def _retry_after(error: exceptions.FirebaseError) -> float | None:
    response = getattr(error, "http_response", None)
    if response is None:
        return None
    value = response.headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _dead_token_reason(error: exceptions.FirebaseError) -> str | None:
    if isinstance(error, messaging.UnregisteredError):
        return "unregistered"
    if isinstance(error, messaging.SenderIdMismatchError):
        return "sender_id_mismatch"
    if isinstance(error, exceptions.InvalidArgumentError) and "token" in str(error).lower():
        return "invalid_token"
    return None


class PushChannel:
    """Sends pushes for one firebase-admin app configured from the settings."""

    def __init__(self, settings: Settings) -> None:
        if not settings.fcm_credentials:
            raise ConfigurationError("FCM credentials are not configured (FCM_CREDENTIALS or "
                                     "GOOGLE_APPLICATION_CREDENTIALS)")
        self.settings = settings
        cred = credentials.Certificate(settings.fcm_credentials)
        self.app = firebase_admin.initialize_app(cred, name=f"dispatcher-push-{next(_app_counter)}")
        service = messaging._get_messaging_service(self.app)
        project = self.app.project_id
        service._fcm_url = f"{settings.fcm_endpoint.rstrip('/')}/v1/projects/{project}/messages:send"

    def close(self) -> None:
        """Release the firebase-admin app."""
        firebase_admin.delete_app(self.app)

    def send(self, request: CommunityRequest, respond_until: datetime,
             targets: Sequence[PushTarget]) -> PushResult:
        """Send to every token of ``targets``; at most 500 messages per call."""
        contents = {
            camera: push_content(request, has_camera=camera, settings=self.settings, respond_until=respond_until)
            for camera in (True, False)
        }
        pairs = [(t, token) for t in targets for token in t.tokens]
        result = PushResult(messages=len(pairs))
        delivered: set[int] = set()
        temporary: set[int] = set()
        failed: dict[int, str] = {}
        for start in range(0, len(pairs), FCM_MAX_BATCH):
            chunk = pairs[start:start + FCM_MAX_BATCH]
            messages = [build_message(token, contents[t.has_camera]) for t, token in chunk]
            batch = messaging.send_each(messages, app=self.app)
            for (target, token), response in zip(chunk, batch.responses, strict=True):
                if response.success:
                    delivered.add(target.resident_id)
                    continue
                error = response.exception
                dead = _dead_token_reason(error)
                if dead:
                    result.retired_tokens[token] = dead
                    failed.setdefault(target.resident_id, f"token_{dead}")
                elif isinstance(error, _RETRYABLE):
                    temporary.add(target.resident_id)
                    if isinstance(error, messaging.QuotaExceededError):
                        result.quota_exceeded = True
                    wait = _retry_after(error)
                    if wait is not None:
                        result.retry_after = max(result.retry_after or 0.0, wait)
                else:
                    failed.setdefault(target.resident_id, f"fcm_{getattr(error, 'code', 'error')}".lower())
        for target in targets:
            rid = target.resident_id
            if rid in delivered:
                result.outcomes[rid] = Outcome(Status.SENT)
            elif rid in temporary:
                result.retry.append(rid)
            else:
                result.outcomes[rid] = Outcome(Status.FAILED, failed.get(rid, "no_token_accepted"))
        return result
