"""Make the README's ops pictures: a `dispatcher status` screenshot and a `dispatcher preview` image.

Runs a real scenario against scratch services: a synthetic town (the demo's), requests distributed by
the real pipeline, part of their ledger closed as if a fan-out were under way, messages on the queues,
a dead letter, and a live in-process worker for the heartbeats. Then renders the status (SVG through
rich, PNG drawn from the same segments) and the preview of the demo's area.

    DATABASE_URL=postgresql://... REDIS_URL=redis://.../N python ops/docs_images.py docs/

It creates and drops the database ``dispatcher_docs`` and FLUSHES the Redis database it is given.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from dispatcher.config import Settings, set_settings

DOCS_DATABASE = "dispatcher_docs"


def _scratch_settings() -> Settings:
    base = Settings.from_env()
    assert base.database_url and base.redis_url, "set DATABASE_URL and REDIS_URL"
    with psycopg.connect(base.database_url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{DOCS_DATABASE}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{DOCS_DATABASE}"')
    params = {k: v for k, v in conninfo_to_dict(base.database_url).items() if v is not None}
    params["dbname"] = DOCS_DATABASE
    return base.with_(database_url=make_conninfo(**params))  # type: ignore[arg-type]


def _segments_to_png(console_lines: list[list[Any]], path: Path, *, width_chars: int) -> None:
    import matplotlib
    from PIL import Image, ImageDraw, ImageFont

    font_path = Path(matplotlib.get_data_path()) / "fonts/ttf/DejaVuSansMono.ttf"
    bold_path = Path(matplotlib.get_data_path()) / "fonts/ttf/DejaVuSansMono-Bold.ttf"
    font, bold = ImageFont.truetype(str(font_path), 15), ImageFont.truetype(str(bold_path), 15)
    from rich.terminal_theme import MONOKAI

    ascent, descent = font.getmetrics()
    cell_w, cell_h, margin = int(font.getlength("M")), ascent + descent, 18
    image = Image.new("RGB", (width_chars * cell_w + 2 * margin, len(console_lines) * cell_h + 2 * margin),
                      (30, 30, 36))
    draw = ImageDraw.Draw(image)
    for row, line in enumerate(console_lines):
        x = margin
        for segment in line:
            style = segment.style
            colour = (220, 220, 220)
            if style is not None and style.color is not None:
                colour = style.color.get_truecolor(MONOKAI)
            if style is not None and style.dim:
                colour = tuple(int(c * 0.6) for c in colour)
            draw.text((x, margin + row * cell_h), segment.text, fill=colour,
                      font=bold if style is not None and style.bold else font)
            x += int(font.getlength(segment.text))
    image.save(path)


def main(out: Path) -> None:
    admin_url = Settings.from_env().database_url or ""
    settings = _scratch_settings()
    set_settings(settings)
    import os

    os.environ["DATABASE_URL"] = settings.database_url or ""
    os.environ["REDIS_URL"] = settings.redis_url or ""
    import dramatiq
    import redis
    from rich.console import Console

    from dispatcher import actors, demo, lifecycle
    from dispatcher.actors import broker
    from dispatcher.contract import parse_request
    from dispatcher.db import connect, migrate
    from dispatcher.lifecycle import State
    from dispatcher.ops.preview import run_preview
    from dispatcher.ops.status import collect_status, status_renderable
    from dispatcher.pipeline import distribute
    from dispatcher.queues import RESIDENTS_QUEUE

    client = redis.Redis.from_url(settings.redis_url or "")
    client.flushdb()
    with connect() as conn:
        migrate(conn)
        demo.seed_town(conn, demo.make_town(30_000, 7), 7)

    now = datetime.now(UTC)
    east = demo.demo_request(now) | {"id": "BVPD-CR-20261123-0042"}
    west = demo.demo_request(now) | {
        "id": "BVPD-CR-20261123-0043", "incident_type": "missing_person",
        "area": {"type": "Polygon", "coordinates": [[[-105.30, 40.005], [-105.275, 40.005], [-105.275, 40.025],
                                                     [-105.30, 40.025], [-105.30, 40.005]]]},
    }
    for payload in (east, west):
        outcome = distribute(payload)
        assert outcome.state == "sending", outcome
    with connect(autocommit=True) as conn:
        # Targeted nine minutes ago; part of each ledger closed over the last minute, as a fan-out would.
        conn.execute("UPDATE community_requests SET accepted_at = accepted_at - interval '9 minutes',"
                     " targeted_at = targeted_at - interval '9 minutes'")
        conn.execute("UPDATE deliveries SET updated_at = updated_at - interval '9 minutes'")
        for request_id, share in ((east["id"], 0.62), (west["id"], 0.18)):
            conn.execute(
                """
                UPDATE deliveries SET status = CASE WHEN random() < 0.985 THEN 'sent' ELSE 'failed' END,
                       sent_at = now(), updated_at = now() - random() * interval '55 seconds'
                WHERE request_id = %s AND status = 'pending' AND random() < %s
                """, (request_id, share))
            conn.execute(
                "UPDATE deliveries SET status = 'suppressed', reason = 'email_suppressed', updated_at = now()"
                " WHERE request_id = %s AND channel = 'email' AND status = 'pending' AND random() < 0.01",
                (request_id,))
        for i in range(3):
            done = demo.demo_request(now - timedelta(hours=3 + i)) | {"id": f"BVPD-CR-20261123-00{30 + i}"}
            lifecycle.accept(conn, parse_request(done))
            lifecycle.transition(conn, done["id"], State.TARGETING, from_={State.ACCEPTED})
            lifecycle.transition(conn, done["id"], State.SENDING, from_={State.TARGETING})
            lifecycle.transition(conn, done["id"], State.COMPLETED, from_={State.SENDING})
        lifecycle.accept(conn, parse_request(demo.demo_request(now) | {"id": "BVPD-CR-20261123-0044"}))

    @dramatiq.actor(queue_name=RESIDENTS_QUEUE, max_retries=0)
    def resident_update_with_bad_data(resident_id: int) -> None:
        raise ValueError("a malformed update (for the picture's dead letter)")

    for _ in range(7):
        actors.send_push.send(east["id"])
    for _ in range(4):
        actors.send_email.send(west["id"])
    actors.send_email.send_with_options(args=(east["id"],), delay=30_000)
    resident_update_with_bad_data.send(12345)
    worker = dramatiq.Worker(broker, worker_threads=1, queues={RESIDENTS_QUEUE})
    worker.start()
    try:
        deadline = time.monotonic() + 10
        while client.zcard(f"dispatcher:{RESIDENTS_QUEUE}.XQ") == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        second = int(time.time())
        client.set(f"dispatcher:ratelimit:push:{second - 1}", 7412, ex=5)
        client.set(f"dispatcher:ratelimit:push:{second}", 3020, ex=5)
        client.set(f"dispatcher:ratelimit:email:{second - 1}", 1000, ex=5)
        with connect(autocommit=True) as conn:
            snapshot = collect_status(conn=conn, client=client)
    finally:
        worker.stop()

    out.mkdir(parents=True, exist_ok=True)
    (out / "ops-status.json").write_text(json.dumps(snapshot, indent=2) + "\n")
    width = 128
    console = Console(record=True, width=width, force_terminal=True, color_system="truecolor")
    console.print("[bold]$ dispatcher status[/]")
    console.print(status_renderable(snapshot))
    console.save_svg(str(out / "ops-status.svg"), title="dispatcher status")
    from rich.console import Group
    from rich.text import Text

    shot = Group(Text("$ dispatcher status", style="bold"), status_renderable(snapshot))
    lines = console.render_lines(shot, console.options.update(width=width), pad=False)
    _segments_to_png(lines, out / "ops-status.png", width_chars=width)

    area_file = out / "ops-preview-area.geojson"
    area_file.write_text(json.dumps(demo.demo_area()))
    with connect(autocommit=True) as conn:
        run_preview(area_file, png=out / "ops-preview.png", geojson_out=None, conn=conn)
    area_file.unlink()
    with psycopg.connect(admin_url, autocommit=True) as admin:
        from dispatcher.db.pool import close_pool

        close_pool()
        admin.execute(f'DROP DATABASE IF EXISTS "{DOCS_DATABASE}" WITH (FORCE)')
    print(f"wrote {out}/ops-status.svg, ops-status.png, ops-status.json, ops-preview.png")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs"))
