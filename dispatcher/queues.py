"""The engine's queue names and its Redis namespace: plain constants, no side effects.

Status tools, tests and the demo read these without building a broker; :mod:`dispatcher.broker`
builds the broker that consumes them.
"""

from __future__ import annotations

#: Approved Community Requests from the publishing pipeline.
REQUESTS_QUEUE = "requests"
#: Push and email fan-out work: each message names one request and one channel, never a resident.
PUSH_QUEUE = "push"
EMAIL_QUEUE = "email"
#: Updates to the resident index from the main application, and provider feedback.
RESIDENTS_QUEUE = "residents"
#: Urgent incident types travel on their own queues, so they never wait behind a county-wide backlog.
URGENT_SUFFIX = ".urgent"
URGENT_REQUESTS_QUEUE = REQUESTS_QUEUE + URGENT_SUFFIX
URGENT_PUSH_QUEUE = PUSH_QUEUE + URGENT_SUFFIX
URGENT_EMAIL_QUEUE = EMAIL_QUEUE + URGENT_SUFFIX
URGENT_QUEUES = (URGENT_REQUESTS_QUEUE, URGENT_PUSH_QUEUE, URGENT_EMAIL_QUEUE)
#: Every queue the engine's workers consume.
ALL_QUEUES = (REQUESTS_QUEUE, URGENT_REQUESTS_QUEUE, PUSH_QUEUE, URGENT_PUSH_QUEUE, EMAIL_QUEUE, URGENT_EMAIL_QUEUE,
              RESIDENTS_QUEUE)
#: Key prefix in Redis for dramatiq's queues.
NAMESPACE = "dispatcher"
