"""Contact Me: an anonymous SMS and call relay through proxy numbers (Twilio).

One module per job: :mod:`.phones` (real numbers, encrypted, found by keyed hash), :mod:`.pool` (proxy
numbers and unambiguous allocation), :mod:`.posts` (a post's Contact Me switch), :mod:`.sessions`
(conversations), :mod:`.inbound` (what a text or call to a proxy number does), :mod:`.outbox` and
:mod:`.actors` (sending texts), :mod:`.provider` (the twilio library), :mod:`.webhooks` (HTTP),
:mod:`.sweep` (time rules, run by the reconciler), :mod:`.rules` (durations, keywords, replies).
Importing this package does no work.
"""
