"""Where PostgreSQL and RabbitMQ keep their passwords: set one, and ask which one they accept.

Every command is an (argv, stdin) pair for a PodExec into the store's pod: argv never carries a
secret, passwords travel on stdin only, and no command's output is shown without the
candidate passwords scrubbed from it. Both stores can be set without knowing the old password
(psql over the pod's local socket as the superuser, `rabbitmqctl` with the node's cookie), so a
rotation can always be finished by setting the stashed new password again.

Which password a store accepts, without relying on its client authentication rules:
- PostgreSQL: read the role's SCRAM-SHA-256 verifier (`pg_authid.rolpassword`) and check each
  candidate against it locally (the pod's loopback connections are `trust`, so logging in with
  a password inside the pod would prove nothing);
- RabbitMQ: `rabbitmqctl authenticate_user USER`, the password on stdin (exit 0: accepted,
  65 with "failed to authenticate user": refused, anything else: could not check).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

from desbordante_ops.cluster.kube.podexec import PodExec

SCRAM_ITERATIONS = 4096
# rabbitmqctl authenticate_user refusing a password: exit 65 (EX_DATAERR) with this message;
# 65 alone is not enough (a malformed node name exits 65 too).
RABBITMQ_REFUSED = 65
RABBITMQ_REFUSED_TEXT = "failed to authenticate user"
_DETAIL_CHARS = 300


class StoreError(Exception):
    """A store command ran but failed, so nothing can be concluded from it (one line)."""


@dataclass(frozen=True)
class Store:
    """One password store: which service and which user in it."""

    kind: str  # "postgres" / "rabbitmq"
    user: str

    @property
    def title(self) -> str:
        return "PostgreSQL" if self.kind == "postgres" else "RabbitMQ"


def scrub(text: str, *values: str) -> str:
    """TEXT with every non-empty VALUE replaced by asterisks."""
    for value in values:
        if value:
            text = text.replace(value, "********")
    return text


def _detail(output: str, *values: str) -> str:
    lines = scrub(output, *values).strip().splitlines()
    return " ".join(lines[-3:])[-_DETAIL_CHARS:] if lines else "no output"


def scram_sha256_verifier(
    password: str, salt: bytes | None = None, iterations: int = SCRAM_ITERATIONS
) -> str:
    """PostgreSQL's SCRAM-SHA-256 verifier of PASSWORD (what `ALTER ROLE ... PASSWORD` stores).

    Sending the verifier instead of the password means the plain value never reaches psql,
    the server log or pg_stat_activity. Our passwords are ASCII, so SASLprep is the identity.
    """
    salt = salt if salt is not None else secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def scram_matches(verifier: str, password: str) -> bool:
    """True when VERIFIER (as pg_authid stores it) was made from PASSWORD."""
    try:
        scheme, rest = verifier.split("$", 1)
        iterations_salt, _keys = rest.split("$", 1)
        iterations, salt = iterations_salt.split(":", 1)
        expected = scram_sha256_verifier(password, base64.b64decode(salt), int(iterations))
    except ValueError:
        return False
    return scheme == "SCRAM-SHA-256" and hmac.compare_digest(expected, verifier)


def _psql(role: str) -> list[str]:
    return ["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-U", role, "-d", "postgres"]


def postgres_set_password(role: str, password: str) -> tuple[list[str], str]:
    """(argv, stdin) that set ROLE's password in PostgreSQL; only a SCRAM verifier travels."""
    quoted_role = '"' + role.replace('"', '""') + '"'
    verifier = scram_sha256_verifier(password)
    return _psql(role), f"ALTER ROLE {quoted_role} WITH PASSWORD '{verifier}';\n\\q\n"


def postgres_verifier_query(role: str) -> tuple[list[str], str]:
    """(argv, stdin) that print ROLE's stored verifier (an empty line when it has none)."""
    sql = "SELECT coalesce(rolpassword, '') FROM pg_authid WHERE rolname = current_user;"
    return _psql(role), sql + "\n\\q\n"


def rabbitmq_set_password(user: str, password: str) -> tuple[list[str], str]:
    """(argv, stdin) that set USER's password in RabbitMQ; rabbitmqctl reads it from stdin."""
    return ["rabbitmqctl", "change_password", user], password + "\n"


def rabbitmq_authenticate(user: str, password: str) -> tuple[list[str], str]:
    """(argv, stdin) that exit 0 when RabbitMQ accepts PASSWORD for USER, 65 when it refuses."""
    return ["rabbitmqctl", "authenticate_user", user], password + "\n"


def set_password(store: Store, password: str, run: PodExec) -> None:
    """Set STORE's password; StoreError (output scrubbed) when the command fails."""
    if store.kind == "postgres":
        argv, stdin = postgres_set_password(store.user, password)
    else:
        argv, stdin = rabbitmq_set_password(store.user, password)
    code, output = run(argv, stdin)
    if code != 0:
        raise StoreError(f"`{argv[0]}` exited {code}: {_detail(output, password, stdin.strip())}")


def accepted(store: Store, candidates: Mapping[str, str], run: PodExec) -> str | None:
    """The name of the candidate password STORE accepts, None when it accepts none of them.

    StoreError when the store could not be asked; kube.ExecFailed passes through.
    """
    values = tuple(candidates.values())
    if store.kind == "postgres":
        argv, stdin = postgres_verifier_query(store.user)
        code, output = run(argv, stdin)
        if code != 0:
            raise StoreError(f"`psql` exited {code}: {_detail(output, *values)}")
        lines = output.split()
        verifier = next((line for line in lines if line.startswith("SCRAM-SHA-256$")), "")
        if lines and not verifier:
            raise StoreError(
                f"the password of role {store.user} is not stored as SCRAM-SHA-256, "
                "so it cannot be compared"
            )
        return next((n for n, pw in candidates.items() if scram_matches(verifier, pw)), None)
    for name, password in candidates.items():
        argv, stdin = rabbitmq_authenticate(store.user, password)
        code, output = run(argv, stdin)
        if code == 0:
            return name
        if code != RABBITMQ_REFUSED or RABBITMQ_REFUSED_TEXT not in output:
            raise StoreError(f"`rabbitmqctl` exited {code}: {_detail(output, *values)}")
    return None
