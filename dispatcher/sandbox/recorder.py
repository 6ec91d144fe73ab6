"""What the sandbox accepted: kept in memory for tests, appended as JSON Lines for people and checkers.

Lines are buffered and written with one ``os.write`` on an ``O_APPEND`` descriptor per flush, so
writing stays cheap at thousands of calls a second and several sandbox workers may share one file
without tearing lines.
"""

from __future__ import annotations

import os
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

#: Flush a stream's buffer once it holds this many lines (the server also flushes on a timer).
FLUSH_LINES = 512
#: Records kept in memory per stream; the files keep everything.
MEMORY_LIMIT = 100_000

#: The streams and their files under the records directory.
STREAMS = {
    "fcm": "fcm.jsonl",
    "sendgrid": "sendgrid.jsonl",
    "sendgrid_requests": "sendgrid_requests.jsonl",
    "events": "events.jsonl",
    "twilio_messages": "twilio_messages.jsonl",
    "twilio_calls": "twilio_calls.jsonl",
    "twilio_webhooks": "twilio_webhooks.jsonl",
}


def read_records(path: Path) -> Iterator[dict[str, Any]]:
    """The records of a JSON Lines record file, one at a time (nothing if the file does not exist)."""
    if not path.exists():
        return
    with path.open("rb") as lines:
        for line in lines:
            if line.strip():
                yield orjson.loads(line)


class Recorder:
    """One recorder per sandbox process; ``record`` is called on the event loop, the rest anywhere."""

    def __init__(self, records_dir: Path, memory_limit: int = MEMORY_LIMIT) -> None:
        self.records_dir = records_dir
        records_dir.mkdir(parents=True, exist_ok=True)
        self._memory_limit = memory_limit
        # Records are kept as their JSON bytes: no garbage-collector work per record, a fifth of the memory.
        self._memory: dict[str, list[bytes]] = {name: [] for name in STREAMS}
        self._buffers: dict[str, list[bytes]] = {name: [] for name in STREAMS}
        self._lock = threading.Lock()
        #: Calls answered, by ``"<provider>.<outcome>"`` (accepted, rejected, fault_503, ...).
        self.stats: Counter[str] = Counter()

    def path(self, stream: str) -> Path:
        return self.records_dir / STREAMS[stream]

    def record(self, stream: str, record: dict[str, Any]) -> None:
        """Keep ``record`` in memory and queue it for its file."""
        text = orjson.dumps(record)
        with self._lock:
            memory = self._memory[stream]
            if len(memory) < self._memory_limit:
                memory.append(text)
            buffer = self._buffers[stream]
            buffer.append(text)
            if len(buffer) >= FLUSH_LINES:
                self._flush_stream(stream)

    def record_lines(self, stream: str, lines: list[bytes]) -> None:
        """Keep already-serialised records (one JSON object each, no newline) and queue them for the file.

        The mail send path records a thousand recipients a call: one lock and two list extends for all.
        """
        with self._lock:
            memory = self._memory[stream]
            room = self._memory_limit - len(memory)
            if room > 0:
                memory.extend(lines if room >= len(lines) else lines[:room])
            buffer = self._buffers[stream]
            buffer.extend(lines)
            if len(buffer) >= FLUSH_LINES:
                self._flush_stream(stream)

    def _flush_stream(self, stream: str) -> None:
        buffer = self._buffers[stream]
        if not buffer:
            return
        data = b"\n".join(buffer) + b"\n"
        buffer.clear()
        fd = os.open(self.path(stream), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
        finally:
            os.close(fd)

    def flush(self) -> None:
        """Write every buffered line to its file."""
        with self._lock:
            for stream in STREAMS:
                self._flush_stream(stream)

    def records(self, stream: str) -> list[dict[str, Any]]:
        """A copy of the in-memory records of one stream (``fcm``, ``sendgrid``, ...)."""
        with self._lock:
            kept = list(self._memory[stream])
        return [orjson.loads(text) for text in kept]

    def iter_file(self, stream: str) -> Iterator[dict[str, Any]]:
        """Every record of one stream ever written to its file (flush first), however many there are."""
        return read_records(self.path(stream))

    def clear(self) -> None:
        """Forget everything: memory, counters and the files."""
        with self._lock:
            for stream in STREAMS:
                self._memory[stream].clear()
                self._buffers[stream].clear()
                self.path(stream).unlink(missing_ok=True)
            self.stats.clear()

    def count(self, outcome: str) -> None:
        self.stats[outcome] += 1

    def summary(self) -> dict[str, Any]:
        with self._lock:
            return {
                "calls": dict(self.stats),
                "recorded": {name: len(items) for name, items in self._memory.items()},
                "files": {name: str(self.path(name)) for name in STREAMS},
            }
