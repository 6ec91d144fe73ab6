"""The publishing pipeline's entry point: validate a Community Request, then enqueue it.

Importing this module builds the engine's broker (a publisher needs one); the contract it validates
against stays a pure model in :mod:`dispatcher.contract`.
"""

from __future__ import annotations

from typing import Any

from dispatcher.actors import enqueue_request
from dispatcher.contract import validate_request


def publish(data: Any) -> str:
    """Validate a Community Request and enqueue it on its ``requests`` queue; return its id.

    Raises :class:`dispatcher.errors.InvalidRequest` (naming each bad field) before anything is enqueued.
    """
    request = validate_request(data)
    enqueue_request(request.to_json_dict())
    return request.id
