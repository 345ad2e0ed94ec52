"""Create what the local stack needs on the local PostgreSQL and RabbitMQ, if missing.

PostgreSQL: role POSTGRES_USER (password from its secret file, sent as an SQL literal over the
admin connection or psql's standard input, never on a command line) and database POSTGRES_DB,
as POSTGRES_ADMIN_USER (`pgadmin` says how: TCP, else psql over the unix socket).
RabbitMQ: vhost RABBITMQ_VHOST and user RABBITMQ_DEFAULT_USER with `rabbitmqctl`, the password
read by rabbitmqctl from its standard input, redirected from the 0600 secret file. Nothing
but our own role, database, vhost and user is ever touched. Without a usable rabbitmqctl the
stack falls back to guest/guest on `/`.
"""

from __future__ import annotations

import shlex
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from invoke import Context, Exit
from psycopg import sql

from desbordante_ops.core.console import ok, warn
from desbordante_ops.core.files import write_private
from desbordante_ops.core.settings import EnvConfig
from desbordante_ops.core.shell import attempt
from desbordante_ops.local.credentials import read_secret, secrets_dir
from desbordante_ops.local.machine import last_line
from desbordante_ops.local.pgadmin import LOOPBACK, open_admin

GUEST = "guest"
GUEST_PASSWORD_FILE = "RABBITMQ_GUEST_PASSWORD"  # noqa: S105 - a file name


def provision_postgres(c: Context, cfg: EnvConfig, password_file: Path) -> None:
    """Create (or re-password) the application role and create its database if missing."""
    user, dbname = cfg.value("POSTGRES_USER"), cfg.value("POSTGRES_DB")
    admin_user = cfg.toolkit.POSTGRES_ADMIN_USER
    with open_admin(c, cfg) as admin:
        role = sql.Identifier(user)
        if user == admin_user:
            warn(f"POSTGRES_USER is the admin user {admin_user}; its password is left unchanged")
        else:
            exists = admin.column(
                sql.SQL("SELECT 1 FROM pg_roles WHERE rolname = {}").format(sql.Literal(user))
            )
            verb = "ALTER" if exists else "CREATE"
            admin.execute(
                sql.SQL(verb + " ROLE {} WITH LOGIN PASSWORD {}").format(
                    role, sql.Literal(read_secret(password_file))
                )
            )
            ok(
                f"PostgreSQL role {user} "
                + ("exists (password synced)" if exists else "created")
                + f", password in {password_file} (admin: {admin.how})"
            )
        owners = admin.column(
            sql.SQL("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = {}").format(
                sql.Literal(dbname)
            )
        )
        owner = owners[0] if owners else None
        if owner and owner not in (user, admin_user):
            raise Exit(
                f"PostgreSQL database {dbname} exists but belongs to {owner}, so {user} cannot "
                f"migrate it: set POSTGRES_DB to another name, or (if it is yours) run "
                f'ALTER DATABASE "{dbname}" OWNER TO "{user}".'
            )
        if owner:
            ok(f"PostgreSQL database {dbname} exists")
        else:
            admin.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(dbname), role)
            )
            ok(f"PostgreSQL database {dbname} created (owner {user})")


@dataclass
class BrokerAccess:
    """What the stack uses for RabbitMQ; OVERRIDES replace config values (guest fallback)."""

    password_file: Path
    overrides: dict[str, str] = field(default_factory=dict)


def _ctl(c: Context, ctl: str, *args: str, stdin_file: Path | None = None) -> tuple[bool, str]:
    """Run `rabbitmqctl -q ARGS`, its standard input redirected from STDIN_FILE if given."""
    command = shlex.join([ctl, "-q", *args])
    if stdin_file is not None:
        command += f" < {shlex.quote(str(stdin_file))}"
    result = attempt(c, command, timeout=60)
    return result.ok, (result.stdout or "") + (result.stderr or "")


def _names(output: str) -> set[str]:
    return {line.split("\t")[0].strip() for line in output.splitlines() if line.strip()}


def guest_fallback(cfg: EnvConfig, reason: str) -> BrokerAccess:
    """Use RabbitMQ's default guest/guest on vhost / (only when no user can be created)."""
    warn(f"{reason}; falling back to RabbitMQ guest/guest on vhost / (run as root to avoid this)")
    overrides = {"RABBITMQ_DEFAULT_USER": GUEST, "RABBITMQ_VHOST": "/"}
    return BrokerAccess(guest_fallback_file(cfg), overrides)


def provision_rabbitmq(c: Context, cfg: EnvConfig, password_file: Path) -> BrokerAccess:
    """Create vhost and user with rabbitmqctl (password via stdin) and grant permissions."""
    user, vhost = cfg.backend.RABBITMQ_DEFAULT_USER, cfg.backend.RABBITMQ_VHOST
    if user == GUEST:
        ok("RabbitMQ user is guest (configured); nothing to create")
        return BrokerAccess(guest_fallback_file(cfg), {})
    if cfg.backend.RABBITMQ_HOST not in LOOPBACK:
        warn(f"RabbitMQ at {cfg.backend.RABBITMQ_HOST} is remote: user {user} and vhost must exist")
        return BrokerAccess(password_file)
    ctl = shutil.which("rabbitmqctl")
    if ctl is None:
        return guest_fallback(cfg, "rabbitmqctl not found")
    listed, vhosts = _ctl(c, ctl, "-s", "list_vhosts", "name")
    if not listed:
        return guest_fallback(cfg, "rabbitmqctl cannot reach the node")
    if vhost not in _names(vhosts):
        _require(_ctl(c, ctl, "add_vhost", vhost), f"add vhost {vhost}")
        ok(f"RabbitMQ vhost {vhost} created")
    else:
        ok(f"RabbitMQ vhost {vhost} exists")
    _, users = _ctl(c, ctl, "-s", "list_users")
    if user in _names(users):
        _require(
            _ctl(c, ctl, "change_password", user, stdin_file=password_file),
            f"set password of {user}",
        )
        ok(f"RabbitMQ user {user} exists (password synced), password in {password_file}")
    else:
        _require(_ctl(c, ctl, "add_user", user, stdin_file=password_file), f"add user {user}")
        ok(f"RabbitMQ user {user} created, password in {password_file}")
    _require(
        _ctl(c, ctl, "set_permissions", "-p", vhost, user, ".*", ".*", ".*"),
        f"grant {user} access to {vhost}",
    )
    return BrokerAccess(password_file)


def guest_fallback_file(cfg: EnvConfig) -> Path:
    """A 0600 file holding RabbitMQ's well-known default password (not a secret)."""
    return write_private(secrets_dir("local", cfg.root) / GUEST_PASSWORD_FILE, GUEST)


def _require(outcome: tuple[bool, str], what: str) -> None:
    done, output = outcome
    if not done:
        raise Exit(f"rabbitmqctl could not {what}: {last_line(output)}")
