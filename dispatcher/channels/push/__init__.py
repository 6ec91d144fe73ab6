"""Push notifications through FCM HTTP v1, one message per device token.

- :mod:`.channel`: :class:`PushChannel`, the Channel (credentials, loop thread, templates, send).
- :mod:`.message`: the FCM message of a request, encoded once by firebase-admin, a token spliced in.
- :mod:`.lanes`: the lane engine: a batch over long-lived connections, as many in flight as Little's law
  says (:mod:`dispatcher.channels.concurrency`), inline retries.
- :mod:`.errors`: sorting FCM's answers (dead token, temporary, quota, permanent) and their reasons.
- :mod:`.judge`: from each device's answer to one outcome per resident (:class:`PushResult`).
- :mod:`.access_token`: the OAuth2 access token, refreshed once for every lane.
- :mod:`.loop`: the event loop thread the connections live on.
- :mod:`.transport`: the transport seam; :mod:`.fcm_http` the lean client (default),
  :mod:`.httpx_transport` the reference.
- :mod:`.firebase_private`: the only module that touches firebase-admin internals.
"""

from dispatcher.channels.push.channel import CONNECTIONS, Devices, PushChannel
from dispatcher.channels.push.judge import QUOTA_DEFAULT_WAIT_SECONDS, TEMPORARY_DEFAULT_WAIT_SECONDS, PushResult
from dispatcher.channels.push.message import MessageTemplate, build_message

__all__ = [
    "CONNECTIONS",
    "QUOTA_DEFAULT_WAIT_SECONDS",
    "TEMPORARY_DEFAULT_WAIT_SECONDS",
    "Devices",
    "MessageTemplate",
    "PushChannel",
    "PushResult",
    "build_message",
]
