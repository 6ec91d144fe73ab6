"""What an import did, and the names of the columns a file may have."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from dispatcher.errors import ImportProblem

Format = Literal["csv", "jsonl"]
#: ``progress(phase, done, total)``: phase "read" counts characters of the file, "upsert" counts steps.
Progress = Callable[[str, int, int | None], None]

REQUIRED_COLUMNS = ("id", "lat", "lng")
OPTIONAL_COLUMNS = (
    "email", "locale", "time_zone", "has_camera", "push_tokens",
    "community_requests", "push", "email_enabled", "version",
)


@dataclass
class ImportReport:
    """What an import did; ``rejected`` lists ``(line number, problem)`` for every row not loaded."""

    rows_read: int = 0
    rows_loaded: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped_stale: int = 0
    skipped_deleted: int = 0
    tokens_added: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)
    #: Wall time in all, of which reading, checking and COPY into staging, and the set-based upserts.
    seconds: float = 0.0
    copy_seconds: float = 0.0
    upsert_seconds: float = 0.0

    @property
    def rows_upserted(self) -> int:
        """Residents inserted or changed."""
        return self.inserted + self.updated

    @property
    def rows_per_second(self) -> float:
        return self.rows_read / self.seconds if self.seconds > 0 else 0.0



class ImportFileUnreadable(ImportProblem):
    """The resident file cannot be opened at all (missing, a directory, no permission): no line to name."""

    def __init__(self, problem: str) -> None:
        super().__init__(0, problem)
        self.args = (problem,)
