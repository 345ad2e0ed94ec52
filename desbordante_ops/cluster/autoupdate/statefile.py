"""What auto-update remembers between cycles, and the registry credentials it pulls with.

Both are root-only files (0600 in a 0700 directory, written atomically by `write_private`)
under AUTOUPDATE_STATE_DIR (default /var/lib/desbordante-ops), next to the bare git mirror
`source-<env>.git` the cycles fetch commits into:
- `autoupdate-<env>.json`: the last check and its outcome, the newest image it saw (tag,
  digest, revision), what it deployed, the last error, and the digests whose rollout or verify
  Job failed (never retried: only a newer image is deployed);
- `registry-<env>.json`: username and password for a private registry (autoupdate.enable),
  never printed.
"""

from __future__ import annotations

import getpass
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from invoke import Exit

from desbordante_ops.cluster.release.ledger import short_id
from desbordante_ops.core.files import write_private
from desbordante_ops.core.settings import EnvConfig
from desbordante_ops.image.push import PASSWORD_VAR, USER_VAR, auth_from_environment


@dataclass
class Seen:
    """The newest image of the branch a cycle found (tag/digest empty: none yet)."""

    commit: str = ""
    tag: str = ""
    digest: str = ""
    revision: str = ""
    note: str = ""


@dataclass
class Deployed:
    """A release auto-update deployed and saw roll out."""

    tag: str = ""
    digest: str = ""
    commit: str = ""
    at: str = ""


@dataclass
class Broken:
    """An image whose rollout or verify Job failed: what happened, what the rollback did."""

    tag: str = ""
    commit: str = ""
    at: str = ""
    error: str = ""
    rollback: str = ""


@dataclass
class State:
    """Everything `autoupdate.status` shows besides the timer."""

    branch: str = ""
    last_check: str = ""
    outcome: str = ""
    seen: Seen = field(default_factory=Seen)
    deployed: Deployed = field(default_factory=Deployed)
    last_error: str = ""
    error_at: str = ""
    broken: dict[str, Broken] = field(default_factory=dict)  # by digest

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> State:
        raw: dict[str, Any] = json.loads(text)
        return cls(
            branch=str(raw.get("branch", "")),
            last_check=str(raw.get("last_check", "")),
            outcome=str(raw.get("outcome", "")),
            seen=Seen(**raw.get("seen") or {}),
            deployed=Deployed(**raw.get("deployed") or {}),
            last_error=str(raw.get("last_error", "")),
            error_at=str(raw.get("error_at", "")),
            broken={key: Broken(**value) for key, value in (raw.get("broken") or {}).items()},
        )


def state_dir(cfg: EnvConfig) -> Path:
    return Path(cfg.toolkit.AUTOUPDATE_STATE_DIR)


def state_path(cfg: EnvConfig) -> Path:
    return state_dir(cfg) / f"autoupdate-{cfg.name}.json"


def mirror_path(cfg: EnvConfig) -> Path:
    """The bare git mirror the cycles fetch commits into and export them from."""
    return state_dir(cfg) / f"source-{cfg.name}.git"


def credentials_path(cfg: EnvConfig) -> Path:
    return state_dir(cfg) / f"registry-{cfg.name}.json"


def load_state(path: Path) -> State:
    """The state at PATH (a fresh State when there is none); Exit when it is unreadable."""
    try:
        return State.from_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return State()
    except PermissionError:
        raise Exit(f"{path} is readable by root only; run this with sudo.") from None
    except (ValueError, TypeError, AttributeError):
        raise Exit(f"{path} is not auto-update state; delete it to start afresh.") from None


def save_state(path: Path, state: State) -> None:
    write_private(path, state.to_json())


def save_credentials(path: Path, auth: dict[str, str]) -> None:
    write_private(path, json.dumps({"username": auth["username"], "password": auth["password"]}))


def load_credentials(path: Path) -> dict[str, str] | None:
    """The stored registry credentials, None when none were stored (a public image)."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return {"username": str(raw["username"]), "password": str(raw["password"])}
    except FileNotFoundError:
        return None
    except PermissionError:
        raise Exit(f"{path} is readable by root only; run this with sudo.") from None
    except (ValueError, KeyError, TypeError):
        raise Exit(f"{path} is damaged; run `invoke autoupdate.enable` again.") from None


def registry_login(
    user: str | None,
    environ: Mapping[str, str] = os.environ,
    ask: Callable[[str], str] = getpass.getpass,
    interactive: bool = False,
) -> dict[str, str] | None:
    """Registry credentials for autoupdate.enable: USER (or REGISTRY_USERNAME) with the password
    from REGISTRY_PASSWORD_FILE / REGISTRY_PASSWORD, else asked with getpass on a terminal.
    None without a user: the image is public."""
    user = user or environ.get(USER_VAR)
    if not user:
        if environ.get(PASSWORD_VAR) or environ.get(f"{PASSWORD_VAR}_FILE"):
            raise Exit(f"A registry password is set but no user: set {USER_VAR} too.")
        return None
    given = {**environ, USER_VAR: user}
    if given.get(PASSWORD_VAR) or given.get(f"{PASSWORD_VAR}_FILE"):
        return auth_from_environment(given)
    if not interactive:
        raise Exit(
            f"No password for registry user {user}: set {PASSWORD_VAR}_FILE to a file holding "
            "it (e.g. a GitHub token with read:packages), or run this on a terminal."
        )
    password = ask(f"Registry password (token) for {user}: ").strip()
    if not password:
        raise Exit("No password given; nothing was changed.")
    return {"username": user, "password": password}


def _short(sha: str) -> str:
    return sha[:12] if sha else "-"


def status_rows(
    state: State, units: Mapping[str, str], timer: Mapping[str, str]
) -> list[tuple[str, str]]:
    """The rows of `autoupdate.status`: the timer (UNITS: what the unit files say, TIMER:
    systemd's view of it), then what the last cycles saw and did."""
    if units:
        schedule = (
            f"{timer.get('UnitFileState', '?')}, {timer.get('ActiveState', '?')}; "
            f"every {units.get('OnUnitInactiveSec', '?')} after the last cycle"
        )
    else:
        schedule = "not installed (`sudo invoke autoupdate.enable --env stage` turns it on)"
    seen, deployed = state.seen, state.deployed
    rows = [
        ("Timer", schedule),
        ("Runs", units.get("ExecStart", "-")),
        ("Next run", timer.get("NextElapseUSecRealtime") or "-"),
        ("Branch", state.branch or "-"),
        ("Last check", state.last_check or "never"),
        ("Outcome", state.outcome or "-"),
        (
            "Newest image",
            f"{seen.tag} ({short_id(seen.digest)}), revision {_short(seen.revision)}"
            if seen.tag
            else (f"none for {_short(seen.commit)} ({seen.note})" if seen.commit else "-"),
        ),
        (
            "Deployed",
            f"{deployed.tag} ({short_id(deployed.digest)}) at {deployed.at}"
            if deployed.tag
            else "nothing yet",
        ),
        ("Last error", f"{state.last_error} (at {state.error_at})" if state.last_error else "-"),
    ]
    for digest, broken in sorted(state.broken.items(), key=lambda item: item[1].at):
        rows.append(
            (
                "Broken (not retried)",
                f"{broken.tag} ({short_id(digest)}) at {broken.at}: {broken.error} -> "
                f"{broken.rollback}",
            )
        )
    return rows
