"""Notification channels behind one protocol: FCM push and SendGrid email, reached over HTTP.

- :mod:`.base`: the ``Channel`` protocol (eligible residents of a batch, send, after recording).
- :mod:`.result`: ``SendResult``, what a channel did with one batch.
- :mod:`.content`: what residents read (push and email text, collapse ids, time to live).
- :mod:`.push`: FCM HTTP v1 (a package: channel, message, lanes, errors, judge, transports).
- :mod:`.email`: SendGrid v3 mail send over a keep-alive httpx client.
- :mod:`.retry_after`: providers' Retry-After, read in both forms and clamped.
- :mod:`.ratelimit`: provider speed limits shared by every worker through Redis.
"""
