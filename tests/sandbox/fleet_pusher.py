"""One worker process of the fleet-quota test: pushes at full speed under the engine's shared rate limit.

``python -m tests.sandbox.fleet_pusher START SECONDS BATCH``: waits until the epoch second START, then
for SECONDS takes BATCH messages at a time from the fleet-wide limiter (Redis, ``REDIS_URL``) and sends
them through the push channel to ``FCM_ENDPOINT``; prints a JSON summary. A quota answer pauses the
whole fleet, as the fan-out does.
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import UTC, datetime, timedelta

from dispatcher.channels.push import PushChannel
from dispatcher.channels.ratelimit import acquire, slow_down
from dispatcher.config import Settings, set_settings
from dispatcher.contract import parse_request
from dispatcher.ledger import Channel
from tests.factories import request_payload
from tests.recipients import device


def main(start: float, seconds: float, batch: int) -> dict[str, int]:
    settings = Settings.from_env()
    set_settings(settings)
    channel = PushChannel(settings)
    request = parse_request(request_payload("fleet-quota"))
    respond_until = datetime.now(UTC) + timedelta(hours=1)
    summary = {"accepted": 0, "quota_exceeded": 0, "batches": 0}
    time.sleep(max(0.0, start - time.time()))
    deadline = time.monotonic() + seconds
    serial = 0
    while time.monotonic() < deadline:
        targets = dict(device(serial + i, [f"fleet-{os.getpid()}-{serial + i}"], True) for i in range(batch))
        serial += batch
        acquire(Channel.PUSH, batch)
        result = channel.send(request, respond_until, targets)
        summary["accepted"] += result.accepted
        summary["batches"] += 1
        if result.quota_exceeded:
            summary["quota_exceeded"] += 1
            slow_down(Channel.PUSH, result.retry_after or 1.0)
    return summary


if __name__ == "__main__":
    print(json.dumps(main(float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]))), flush=True)
