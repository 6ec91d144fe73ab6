"""A raw HTTP/1.1 server whose every answer a test scripts: what a provider sandbox would never say."""

from __future__ import annotations

import contextlib
import re
import socket
import threading
from typing import Any


def refusing_port() -> tuple[socket.socket, int]:
    """A port bound but not listening: every connection to it is refused while the socket stays open
    (a closed port could be taken by another test's server meanwhile)."""
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    return holder, holder.getsockname()[1]


class ScriptedHttp:
    """A raw HTTP/1.1 server: ``answer(connection_number, call_number, body)`` gives the reply bytes,
    or None to hang up without answering, or ``b""`` to never answer."""

    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.connections = 0
        self.calls: list[bytes] = []
        self.heads: list[bytes] = []
        self._sockets: list[socket.socket] = []
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            self.connections += 1
            self._sockets.append(client)
            threading.Thread(target=self._serve, args=(client, self.connections), daemon=True).start()

    def _serve(self, client: socket.socket, number: int) -> None:
        reader = client.makefile("rb")
        call = 0
        with contextlib.suppress(OSError, ValueError):
            while True:
                head = b""
                while not head.endswith(b"\r\n\r\n"):
                    line = reader.readline()
                    if not line:
                        return
                    head += line
                length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
                body = reader.read(length)
                self.calls.append(body)
                self.heads.append(head)
                call += 1
                reply = self.answer(number, call, head + body)
                if reply is None:
                    client.close()
                    return
                client.sendall(reply)

    def close(self) -> None:
        self.server.close()
        for client in self._sockets:
            with contextlib.suppress(OSError):
                client.close()
