"""The few HTTP pieces the raw ASGI sandbox needs: a response triple and JSON helpers."""

from __future__ import annotations

from typing import Any, NamedTuple

import orjson

JSON_HEADERS: list[tuple[bytes, bytes]] = [(b"content-type", b"application/json; charset=UTF-8")]


class Response(NamedTuple):
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    #: Cut the connection after the headers and part of the body (a connection-level fault).
    cut: bool = False


def json_response(status: int, payload: Any, headers: list[tuple[bytes, bytes]] | None = None) -> Response:
    body = orjson.dumps(payload)
    return Response(status, JSON_HEADERS + (headers or []), body)


def header(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    """The first value of a header (names in ASGI scopes are lower-case)."""
    for key, value in headers:
        if key == name:
            return value
    return None
