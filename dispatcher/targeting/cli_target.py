"""`dispatcher target AREA.geojson [--ids FILE]`: match an area without sending anything.

An internal ops tool: it says how many residents an area covers and how long the match took, and can
write their ids. Its counts are for operators and never go to an agency.
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console

from dispatcher.config import get_settings
from dispatcher.db.pool import connect
from dispatcher.errors import InvalidArea
from dispatcher.targeting.area import parse_area
from dispatcher.targeting.match import MatchResult, count_sink, file_sink, match_area


def run_target(area_path: Path | str, ids_path: Path | str | None = None) -> tuple[int, float]:
    """(residents covered, seconds from reading the GeoJSON to the ids written).

    Raises :class:`InvalidArea` when the file is missing or is not a usable area.
    """
    count, seconds, _ = target_area(area_path, ids_path)
    return count, seconds


def target_area(area_path: Path | str, ids_path: Path | str | None = None) -> tuple[int, float, MatchResult]:
    """Like :func:`run_target`, with the match's details (candidates, ranges, timings)."""
    settings = get_settings()
    started = time.perf_counter()
    try:
        text = Path(area_path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidArea(f"cannot read {area_path}: {exc}") from None
    area = parse_area(text, max_vertices=settings.max_area_vertices, max_area_km2=settings.max_area_km2,
                      max_bytes=settings.max_area_bytes)
    with connect(autocommit=True) as conn, connect(autocommit=True) as worker:
        if ids_path is None:
            result = match_area(conn, area, sink=count_sink, workers=[worker])
        else:
            with Path(ids_path).open("wb") as out:
                result = match_area(conn, area, sink=file_sink(out), workers=[worker])
    return result.matched, time.perf_counter() - started, result


def explain_match(result: MatchResult) -> str:
    """The plan chosen, its estimate, the plans it beat, and what the match really cost."""
    lines = [result.plan.explain()] if result.plan is not None else ["plan: cover (forced)"]
    t = result.timings
    lines.append(
        f"actual: {result.boundary_ranges + result.interior_ranges:,} ranges, "
        f"{result.boundary_candidates:,} candidates tested ({result.boundary_kept:,} inside), "
        f"{result.interior_written:,} interior rows; cover {t.cover * 1000:.1f} ms, "
        f"candidates {t.candidates * 1000:.1f} ms, test {t.refine * 1000:.1f} ms, write {t.write * 1000:.1f} ms, "
        f"total {t.total * 1000:.1f} ms; peak memory of this process {peak_rss_mb():.0f} MB")
    return "\n".join(lines)


def peak_rss_mb() -> float:
    """This process's peak resident set size so far (the kernel's ``VmHWM``; 0 where there is no /proc)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration, ValueError):
        return 0.0


def print_target(count: int, seconds: float, console: Console | None = None) -> None:
    """The tool's one line of output."""
    (console or Console()).print(f"[bold]{count:,}[/bold] residents in the area, matched in {seconds * 1000:.1f} ms")
