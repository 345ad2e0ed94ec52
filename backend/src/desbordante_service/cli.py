"""`desbordante-service ROLE`: the entry points of the image and the local stack.

Each role runs its server in this very process (no wrapper process), so signals reach it.
Bad configuration stops the process with one line naming the variable and exit code 2.
`verify` only talks HTTP to an API (see verify.py): it reads its own VERIFY_* variables and none
of the service's settings.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence

from desbordante_service.settings import Settings, SettingsError, get_settings

EXIT_CONFIG = 2
DATABASE_ROLES = {"api", "worker", "migrate", "retention"}


def _configure_logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.LOG_LEVEL,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)


def run_api(settings: Settings, _: argparse.Namespace) -> int:
    import uvicorn

    uvicorn.run(
        "desbordante_service.api.app:create_app",
        factory=True,
        host=settings.APPLICATION_SERVER_HOST,
        port=settings.APPLICATION_SERVER_PORT,
        workers=settings.API_WORKERS,
        http="httptools",  # a C parser: less CPU per uploaded byte than h11
        timeout_graceful_shutdown=settings.SHUTDOWN_GRACE_SECONDS,
        proxy_headers=True,
        forwarded_allow_ips="*",
        log_level=settings.LOG_LEVEL.lower(),
        access_log=True,
    )
    return 0


def run_worker(settings: Settings, args: argparse.Namespace) -> int:
    from desbordante_service.worker.app import get_celery

    argv = [
        "worker",
        f"--loglevel={settings.LOG_LEVEL}",
        f"--concurrency={settings.WORKER_CONCURRENCY}",
        f"--queues={settings.TASK_QUEUE}",
        "--task-events",
        "--without-gossip",
        "--without-mingle",
    ]
    if args.hostname:
        argv.append(f"--hostname={args.hostname}")
    get_celery().worker_main(argv)
    return 0


def run_worker_ping(settings: Settings, args: argparse.Namespace) -> int:
    """Exit 0 when this host's worker answers a ping (liveness probe of worker pods)."""
    from desbordante_service.worker.app import get_celery

    hostname = args.hostname or f"celery@{socket.gethostname()}"
    replies = get_celery().control.ping(destination=[hostname], timeout=args.timeout)
    if replies:
        return 0
    print(f"worker-ping: no answer from {hostname}", file=sys.stderr)
    return 1


def wait_for_broker(settings: Settings, timeout: float) -> bool:
    from desbordante_service.worker.app import get_celery

    deadline = time.monotonic() + timeout
    while True:
        try:
            with get_celery().connection_for_write() as connection:
                connection.ensure_connection(max_retries=1, timeout=3)
            return True
        except Exception as exc:
            if time.monotonic() >= deadline:
                print(f"flower: broker unreachable: {exc}", file=sys.stderr)
                return False
            logging.getLogger(__name__).info("waiting for the broker: %s", exc)
            time.sleep(2)


def run_flower(settings: Settings, args: argparse.Namespace) -> int:
    password = settings.FLOWER_PASSWORD.get_secret_value()
    if not password:
        print("FLOWER_PASSWORD: required for flower (or FLOWER_PASSWORD_FILE)", file=sys.stderr)
        return EXIT_CONFIG
    if not wait_for_broker(settings, args.broker_timeout):
        return 1
    from desbordante_service.worker.app import get_celery

    # Through the environment, never argv: command lines are visible to every user in `ps`.
    os.environ["FLOWER_BASIC_AUTH"] = f"{settings.FLOWER_USER}:{password}"
    argv = [
        "flower",
        f"--address={settings.FLOWER_HOST}",
        f"--port={settings.FLOWER_PORT}",
        f"--url_prefix={settings.FLOWER_URL_PREFIX}",
        f"--logging={settings.LOG_LEVEL.lower()}",
    ]
    get_celery().start(argv=argv)
    return 0


def check_schema(wait: float) -> int:
    """0 once the schema is at head; polls for up to `wait` seconds (database may be starting)."""
    from sqlalchemy.exc import DBAPIError

    from desbordante_service import migrate

    deadline = time.monotonic() + wait
    while True:
        try:
            if migrate.is_current():
                print("migrate: the database schema is up to date")
                return 0
            reason = "the database schema is not at the latest revision"
        except DBAPIError as exc:
            reason = f"database unreachable: {type(exc.orig).__name__}"
        if time.monotonic() >= deadline:
            print(f"migrate: {reason}", file=sys.stderr)
            return 1
        time.sleep(2)


def run_migrate(settings: Settings, args: argparse.Namespace) -> int:
    from sqlalchemy.exc import DBAPIError

    from desbordante_service import migrate

    if args.check:
        return check_schema(args.wait)
    try:
        before, after = migrate.upgrade()
    except DBAPIError as exc:
        print(f"migrate: failed: {_reason(exc)}", file=sys.stderr)
        return 1
    if before == after:
        print(f"migrate: already at revision {after}")
    else:
        print(f"migrate: upgraded from {before or 'an empty database'} to {after}")
    return 0


def _reason(exc: Exception) -> str:
    """The first line of a database or OS error, without the traceback."""
    orig = getattr(exc, "orig", None) or exc
    lines = str(orig).strip().splitlines()
    return lines[0] if lines else type(orig).__name__


def run_retention(settings: Settings, args: argparse.Namespace) -> int:
    """One retention pass (exit 1 if it failed), or one every --interval seconds until SIGTERM."""
    from sqlalchemy.exc import SQLAlchemyError

    from desbordante_service import retention
    from desbordante_service.db import session_scope
    from desbordante_service.storage import Storage

    log = logging.getLogger(retention.__name__)
    if not settings.RETENTION_DAYS:
        log.info("retention: off (RETENTION_DAYS=0): nothing is deleted")
    stop = threading.Event()
    if args.interval is not None:
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
    storage = Storage(settings.UPLOADED_FILES_DIR_PATH)
    while True:
        status = 0
        try:
            with session_scope() as session:
                report = retention.run_pass(session, storage, settings.RETENTION_DAYS, stop)
            if settings.RETENTION_DAYS:
                log.info("%s", report)
        except (SQLAlchemyError, OSError) as exc:
            log.error("retention: failed: %s", _reason(exc))
            status = 1
        if args.interval is None:
            return status
        if stop.wait(args.interval):
            return 0


def _interval(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0.0
    if not 0 < seconds < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {value!r}")
    return seconds


ROLES: dict[str, Callable[[Settings, argparse.Namespace], int]] = {
    "api": run_api,
    "worker": run_worker,
    "worker-ping": run_worker_ping,
    "flower": run_flower,
    "migrate": run_migrate,
    "retention": run_retention,
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="desbordante-service", description=__doc__)
    roles = parser.add_subparsers(dest="role", required=True, metavar="ROLE")
    roles.add_parser("api", help="serve the HTTP API (uvicorn)")
    worker = roles.add_parser("worker", help="run a Celery worker")
    worker.add_argument("--hostname", help="Celery node name (default celery@HOST)")
    ping = roles.add_parser("worker-ping", help="exit 0 if the local worker answers a ping")
    ping.add_argument("--hostname", help="node to ping (default celery@HOST)")
    ping.add_argument("--timeout", type=float, default=5.0, help="seconds to wait")
    flower = roles.add_parser("flower", help="serve Celery Flower behind basic auth")
    flower.add_argument(
        "--broker-timeout", type=float, default=120.0, help="seconds to wait for the broker"
    )
    migrate = roles.add_parser("migrate", help="upgrade the database schema (safe concurrently)")
    migrate.add_argument("--check", action="store_true", help="only check the schema is current")
    migrate.add_argument(
        "--wait", type=float, default=0.0, help="with --check: seconds to wait for the schema"
    )
    retention = roles.add_parser(
        "retention", help="delete datasets, tasks and files older than RETENTION_DAYS"
    )
    retention.add_argument(
        "--interval",
        type=_interval,
        metavar="SECONDS",
        help="repeat the pass every SECONDS until SIGTERM (default: one pass, then exit)",
    )
    roles.add_parser(
        "verify",
        help="prove over HTTP that the API profiles a dataset (a post-deploy check)",
        description=VERIFY_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return parser


VERIFY_HELP = """\
Check a running API: readiness, upload a small CSV, run an FD task to the end and compare its
FDs with the expected ones, delete the dataset; one line per step on stdout. Exit 0 when every
step passed, 1 when one failed, 2 on bad configuration. Environment variables only:
  VERIFY_API_URL             base URL of the API, e.g. http://api (required)
  VERIFY_TIMEOUT_SECONDS     bound of the checks in seconds (default 120)
  VERIFY_AUTH_USER           basic-auth user (optional)
  VERIFY_AUTH_PASSWORD_FILE  file holding its password (required with VERIFY_AUTH_USER)
"""


def run_verify(environ: Mapping[str, str]) -> int:
    """The `verify` role: its own configuration (no database or broker settings)."""
    from desbordante_service import verify

    try:
        config = verify.load_config(environ)
    except SettingsError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    return verify.main(config)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.role == "verify":
        try:
            return run_verify(os.environ)
        except KeyboardInterrupt:
            return 130
    try:
        settings = get_settings()
        if args.role in DATABASE_ROLES:
            settings.require_database()
    except SettingsError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    _configure_logging(settings)
    try:
        return ROLES[args.role](settings, args)
    except KeyboardInterrupt:
        return 130
