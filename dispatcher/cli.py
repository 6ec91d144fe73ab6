"""`dispatcher ...`: a thin command line over the engine's modules.

Each command parses its arguments, calls :func:`dispatcher.bootstrap.bootstrap`, and hands over to
the module that does the work. Nothing here holds logic worth testing on its own.

Whatever goes wrong in a command ends the same way: one line ``error: ...`` on stderr, printed as
plain text (an error names paths, keys and ``[longitude, latitude]``, which rich would read as markup),
and exit code 2, never a traceback (:class:`_CleanErrors`).
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from typer.core import TyperGroup

from dispatcher.errors import ConfigurationError, DispatcherError, InvalidRequest

#: Exit code of every failed command (click uses it for usage errors too).
EXIT_ERROR = 2
#: An error line longer than this is cut: it names the problem, it does not echo the input.
MAX_ERROR_CHARS = 1000
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def error_line(error: BaseException) -> str:
    """The one line a failed command prints: plain text, control characters and newlines flattened."""
    if isinstance(error, OSError) and error.filename is not None:
        text = f"{error.filename}: {error.strerror or error}"
    elif isinstance(error, RecursionError):
        text = "the input is nested too deeply"
    elif isinstance(error, DispatcherError | ValueError | OSError | LookupError):
        text = str(error)
    else:
        text = f"{type(error).__name__}: {error}"
    text = _CONTROL.sub(" ", text).strip() or type(error).__name__
    return "error: " + (text if len(text) <= MAX_ERROR_CHARS else text[:MAX_ERROR_CHARS] + "…")


class _CleanErrors(TyperGroup):
    """Turns any exception out of a command into :func:`error_line` on stderr and exit code 2."""

    def invoke(self, ctx: Any) -> Any:  # typer's own click Context
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, typer.TyperException):  # typer's own: usage errors, --help, Exit
            raise
        except Exception as error:  # every failure ends as one line, see the module doc
            _fail(error)


app = typer.Typer(help="Geospatial notification engine for Community Requests.", no_args_is_help=True,
                  pretty_exceptions_enable=False, cls=_CleanErrors)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
residents_app = typer.Typer(help="The resident index.", no_args_is_help=True)
contract_app = typer.Typer(help="The job contract.", no_args_is_help=True)
embedded_app = typer.Typer(help="The embedded PostgreSQL and Redis.", no_args_is_help=True)
agencies_app = typer.Typer(help="The agency registry.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(residents_app, name="residents")
app.add_typer(contract_app, name="contract")
app.add_typer(embedded_app, name="embedded")
app.add_typer(agencies_app, name="agencies")
relay_app = typer.Typer(help="Contact Me: the anonymous SMS and call relay.", no_args_is_help=True)
app.add_typer(relay_app, name="relay")

console = Console()


def _fail(error: BaseException) -> NoReturn:
    typer.echo(error_line(error), err=True)
    raise typer.Exit(code=EXIT_ERROR)


def _read_json(path: Path) -> Any:
    """A JSON file's value; a file that is not UTF-8, not JSON or nested too deeply is an InvalidRequest."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRequest([f"{path}: not UTF-8 text (byte {exc.start})"]) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidRequest([f"{path}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"]) from None
    except RecursionError:
        raise InvalidRequest([f"{path}: the JSON is nested too deeply"]) from None


@db_app.command("migrate")
def db_migrate() -> None:
    """Apply pending SQL migrations."""
    from dispatcher.bootstrap import bootstrap
    from dispatcher.db import connect, migrate

    bootstrap()
    with connect() as conn:
        applied = migrate(conn)
    console.print(f"applied {len(applied)} migration(s): {', '.join(applied) or 'none pending'}")


@app.command()
def worker(
    processes: Annotated[int, typer.Option(help="Worker processes.")] = 2,
    threads: Annotated[int, typer.Option(help="Threads per process.")] = 8,
    queues: Annotated[list[str] | None, typer.Option("--queue", help="Only these queues.")] = None,
) -> None:
    """Run dramatiq workers for every stage (requests, push, email, residents)."""
    # Workers log what happens to requests (accepted, targeted, completed) at INFO: forked worker processes
    # inherit this level and the JSON handler on standard error. DISPATCHER_LOG_LEVEL changes it.
    level = os.environ.get("DISPATCHER_LOG_LEVEL", "INFO").strip().upper()
    if level not in logging.getLevelNamesMapping():
        _fail(ConfigurationError(f"DISPATCHER_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, not {level!r}"))
    logging.getLogger().setLevel(level)
    from dispatcher.bootstrap import bootstrap
    from dispatcher.config import get_settings

    settings = bootstrap(run_migrations=get_settings().migrate_on_worker_start)
    from dispatcher.ops.metrics import prepare_worker_metrics_dir

    # One metrics directory per host, emptied at start so counters do not add up across restarts.
    prepare_worker_metrics_dir(settings.home / "prometheus")
    args = ["dramatiq", "dispatcher.worker_entry", "--processes", str(processes), "--threads", str(threads)]
    for queue in queues or []:
        args += ["--queues", queue]
    from dramatiq.cli import main as dramatiq_main

    sys.argv = args
    raise typer.Exit(code=dramatiq_main())


@app.command()
def publish(path: Annotated[Path, typer.Argument(help="A Community Request as JSON.")]) -> None:
    """Validate a Community Request file and enqueue it (what the publishing pipeline does)."""
    from dispatcher.bootstrap import bootstrap

    bootstrap()
    from dispatcher.publishing import publish as publish_request

    request_id = publish_request(_read_json(path))
    console.print(f"enqueued request {request_id}", markup=False, highlight=False)


@app.command()
def demo(
    residents: Annotated[int, typer.Option(help="Residents in the synthetic town.")] = 30_000,
    seed: Annotated[int, typer.Option(help="Random seed of the town.")] = 7,
) -> None:
    """Seed a synthetic town, publish one request of each kind, relay a Contact Me conversation, run the
    worker, print a summary checked against an independent oracle."""
    from dispatcher.demo import run_demo

    ok = run_demo(residents=residents, seed=seed, console=console)
    raise typer.Exit(code=0 if ok else 1)


@app.command()
def target(
    area: Annotated[Path, typer.Argument(help="GeoJSON Polygon, MultiPolygon or Feature.")],
    ids: Annotated[Path | None, typer.Option("--ids", help="Write matched resident ids here, one a line.")] = None,
    explain: Annotated[bool, typer.Option("--explain", help="Print the plan chosen, its estimate and its cost.")]
    = False,
) -> None:
    """Match an area against the resident index without sending anything (internal ops tool)."""
    from dispatcher.bootstrap import bootstrap

    bootstrap()
    from dispatcher.targeting.cli_target import explain_match, target_area

    try:
        count, seconds, result = target_area(area, ids)
    except DispatcherError as error:
        _fail(error)
    console.print(f"{count} residents in the area, matched in {seconds * 1000:.1f} ms")
    if explain:
        console.print(explain_match(result), markup=False, highlight=False, soft_wrap=True)


@residents_app.command("import")
def residents_import(
    path: Annotated[Path, typer.Argument(help="CSV (id,lat,lng,...) or JSON Lines file.")],
) -> None:
    """Load or update residents through COPY, upserting by id."""
    from dispatcher.bootstrap import bootstrap

    bootstrap()
    from dispatcher.preferences.cli_import import run_import

    try:
        run_import(path, console)
    except DispatcherError as error:
        _fail(error)


@agencies_app.command("import")
def agencies_import(
    path: Annotated[Path, typer.Argument(help="GeoJSON FeatureCollection: one Feature per agency.")],
) -> None:
    """Load or update agencies and their jurisdictions (one transaction: a bad feature loads nothing)."""
    from dispatcher.bootstrap import bootstrap

    bootstrap()
    from dispatcher.agencies.registry import read_feature_collection, upsert_agencies
    from dispatcher.db import connect

    records = read_feature_collection(path)
    with connect() as conn:
        joined = upsert_agencies(conn, records)
    if joined:
        from dispatcher.agencies.actors import announce_agency

        for agency_id in joined:  # residents inside each joining agency's jurisdiction are told
            announce_agency.send(agency_id)
    console.print(f"{len(records)} agencies loaded, {len(joined)} joined", markup=False, highlight=False)


@app.command()
def moderate(
    path: Annotated[Path, typer.Argument(help="A request as JSON (any kind).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the flags as JSON.")] = False,
) -> None:
    """Advise a moderator: flag what breaks the posting guidelines, with the span and the guideline.

    Advisory only: exit code 0 whatever it finds (1 would read as "blocked"); nothing is published.
    """
    from dispatcher.agencies.moderation import moderate_request

    data = _read_json(path)
    if not isinstance(data, dict):
        raise InvalidRequest([f"{path}: expected a JSON object, got {type(data).__name__}"])
    flags = moderate_request(data)
    if as_json:
        print(json.dumps({"flags": [f.to_dict() for f in flags]}, indent=2))
        return
    if not flags:
        console.print("no flags: nothing in this request breaks a guideline the assistant checks", markup=False)
    for flag in flags:
        console.print(f"{flag.rule} in {flag.field} [{flag.start}:{flag.end}] {flag.text!r}\n  {flag.guideline}",
                      markup=False, highlight=False)


@app.command()
def sandbox(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8700,
    records: Annotated[Path, typer.Option(help="Where accepted pushes and emails are recorded.")] = Path(
        ".dispatcher/sandbox"),
    latency: Annotated[bool, typer.Option(help="Realistic latency per call (median 60 ms, p99 400 ms).")] = False,
    fcm_quota: Annotated[int | None, typer.Option(help="FCM calls a minute (default 600,000; 0 = none).")] = None,
    control_token: Annotated[str | None, typer.Option(
        help="Control API token (beyond loopback: generated and printed once when not given).")] = None,
) -> None:
    """Run the local FCM and SendGrid sandbox (for the demo and benchmarks)."""
    from dispatcher.sandbox import run_sandbox
    from dispatcher.sandbox.faults import BENCHMARK_LATENCY, startup_plans

    median, p99 = BENCHMARK_LATENCY if latency else (0.0, 0.0)
    try:
        plans = startup_plans(latency_median_ms=median, latency_p99_ms=p99, fcm_quota=fcm_quota)
    except DispatcherError as error:
        _fail(error)
    run_sandbox(host=host, port=port, records_dir=records, control_token=control_token, faults=plans)


@app.command()
def webhooks(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8800,
) -> None:
    """Receive SendGrid's signed event webhook (bounces, unsubscribes) for the workers."""
    from dispatcher.bootstrap import bootstrap

    bootstrap()
    from dispatcher.preferences.webhook import run_webhooks

    run_webhooks(host=host, port=port)


@app.command()
def api(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8900,
    workers: Annotated[int, typer.Option(min=1, help="uvicorn worker processes.")] = 1,
    write_openapi: Annotated[Path | None, typer.Option(
        help="Write the OpenAPI document to this file and exit (docs/openapi.json).")] = None,
) -> None:
    """Serve the feed to the main application (bearer token API_TOKEN)."""
    if write_openapi is not None:
        from dispatcher.api.app import openapi_text

        write_openapi.write_text(openapi_text(), encoding="utf-8")
        return
    from dispatcher.bootstrap import bootstrap

    bootstrap()
    from dispatcher.api.serve import run_api

    run_api(host=host, port=port, workers=workers)


@app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    watch: Annotated[bool, typer.Option("--watch", help="Refresh until interrupted (JSON: one line each).")] = False,
    interval: Annotated[float, typer.Option(help="Seconds between refreshes with --watch.")] = 2.0,
) -> None:
    """Queues, workers, active requests and provider rate limits."""
    from dispatcher.bootstrap import bootstrap

    bootstrap()
    from dispatcher.ops.status import collect_status, render_status, watch_status

    if watch:
        watch_status(console, interval=interval, as_json=as_json)
        return
    snapshot = collect_status()
    if as_json:
        print(json.dumps(snapshot, indent=2, default=str))
    else:
        render_status(snapshot, console)


@app.command()
def preview(
    area: Annotated[Path, typer.Argument(help="GeoJSON Polygon, MultiPolygon or Feature.")],
    png: Annotated[Path | None, typer.Option("--png", help="Write a picture here.")] = None,
    geojson: Annotated[Path | None, typer.Option("--geojson", help="Write the layers as GeoJSON here.")] = None,
    density: Annotated[bool, typer.Option("--density/--no-density", help="Count residents (needs the DB).")] = True,
    width: Annotated[int, typer.Option(help="Picture width in pixels.")] = 1200,
    height: Annotated[int, typer.Option(help="Picture height in pixels.")] = 900,
) -> None:
    """Picture what an area reaches: its H3 cells (interior, boundary band) and resident density."""
    if png is None and geojson is None:
        raise typer.BadParameter("give --png FILE, --geojson FILE or both")
    from dispatcher.bootstrap import bootstrap

    if density:
        bootstrap()
    from dispatcher.db import connect
    from dispatcher.ops.preview import run_preview

    try:
        if density:
            with connect(autocommit=True) as conn:
                layers = run_preview(area, png=png, geojson_out=geojson, conn=conn, width_px=width, height_px=height)
        else:
            layers = run_preview(area, png=png, geojson_out=geojson, conn=None, width_px=width, height_px=height)
    except DispatcherError as error:
        _fail(error)
    console.print(f"{len(layers.interior)} interior cells, {len(layers.boundary)} boundary cells, "
                  f"{len(layers.density)} density cells (res {layers.density_resolution})")


@app.command("dead-letters")
def dead_letters(
    queue: Annotated[str | None, typer.Option("--queue", help="Only this queue (push, email, requests...).")] = None,
    retry: Annotated[str | None, typer.Option("--retry", help="Retry the dead letter with this message id.")] = None,
    retry_all: Annotated[bool, typer.Option("--retry-all", help="Retry every listed dead letter.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Messages that exhausted their retries, with the reason (ids only); retry one or all."""
    from dispatcher.bootstrap import bootstrap

    bootstrap()
    import dramatiq

    import dispatcher.worker_entry  # noqa: F401  (declares every queue)
    from dispatcher.deadletters import list_dead_letters, retry_dead_letters

    broker = dramatiq.get_broker()
    if retry or retry_all:
        count = retry_dead_letters(broker, queue=queue, message_id=retry)
        if retry and count == 0:
            _fail(LookupError(f"no dead letter with id {retry}"))
        console.print(f"re-enqueued {count} dead letter(s)")
        return
    letters = list_dead_letters(broker, queue)
    if as_json:
        print(json.dumps([letter.to_dict() for letter in letters], indent=2))
        return
    if not letters:
        console.print("no dead letters")
        return
    from datetime import UTC, datetime

    for letter in letters:
        when = datetime.fromtimestamp(letter.dead_at, UTC).isoformat(timespec="seconds")
        console.print(f"{letter.message_id}  {letter.queue:<16} {letter.actor:<22} request={letter.request_id} "
                      f"retries={letter.retries} at={when}  {letter.exception or ''}: {letter.detail or ''}",
                      markup=False, highlight=False)


@contract_app.command("schema")
def contract_schema(
    check: Annotated[bool, typer.Option(help="Fail if the published file differs from the model.")] = False,
) -> None:
    """Print the JSON Schema of the Community Request contract (or check the published file)."""
    from dispatcher.contract import json_schema, published_schema

    schema = json_schema()
    if check:
        same = schema == published_schema()
        console.print("schema file is up to date" if same else "[red]schema file is out of date[/]")
        raise typer.Exit(code=0 if same else 1)
    print(json.dumps(schema, indent=2))


@embedded_app.command("stop")
def embedded_stop() -> None:
    """Stop the embedded PostgreSQL and Redis started under DISPATCHER_HOME."""
    from dispatcher.config import get_settings
    from dispatcher.embedded import stop_postgres, stop_redis

    home = get_settings().home
    stop_postgres(home / "pgdata")
    stop_redis(home / "redis")
    console.print(f"stopped embedded servers under {home}", markup=False, highlight=False)


@relay_app.command("serve")
def relay_serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8900,
) -> None:
    """Serve Twilio's signed webhooks and the app's Contact Me routes (also part of the main API)."""
    from dispatcher.bootstrap import bootstrap

    bootstrap()
    from dispatcher.relay.webhooks import run_relay

    run_relay(host=host, port=port)


@relay_app.command("add-numbers")
def relay_add_numbers(numbers: Annotated[list[str], typer.Argument(help="Our Twilio numbers, E.164.")]) -> None:
    """Put proxy numbers into the pool."""
    from dispatcher.bootstrap import bootstrap
    from dispatcher.db import connect
    from dispatcher.relay.pool import add_proxy_numbers

    bootstrap()
    try:
        with connect(autocommit=True) as conn:
            added = add_proxy_numbers(conn, numbers)
    except DispatcherError as error:
        _fail(error)
    console.print(f"{added} new proxy number(s), {len(numbers) - added} already in the pool")


@relay_app.command("rotate-keys")
def relay_rotate_keys() -> None:
    """Re-encrypt every stored number with the first of RELAY_NUMBER_KEYS (then the old key can go)."""
    from dispatcher.bootstrap import bootstrap
    from dispatcher.db import connect
    from dispatcher.relay.phones import rotate_number_keys

    bootstrap()
    try:
        with connect(autocommit=True) as conn:
            done = rotate_number_keys(conn)
    except DispatcherError as error:
        _fail(error)
    console.print(f"re-encrypted {done} number(s)")


def main(argv: list[str] | None = None) -> Any:
    """Entry point of the ``dispatcher`` script."""
    os.environ.setdefault("PYTHONWARNINGS", "ignore::UserWarning:platformdirs")
    from dispatcher.ops.logging import configure_logging

    # JSON, redacted log lines; commands print their results with rich, so only warnings are logged.
    configure_logging(logging.WARNING)
    return app(args=argv)
