"""An archive's schema revision against the code's: the same, older (migrate), or refused.

The code's revisions are the alembic script directory of the installed backend, the same one
`desbordante-service migrate` upgrades with. A revision it does not know comes from newer code:
restoring it would leave a schema this code cannot run, so it is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

from alembic.script import ScriptDirectory
from invoke import Exit

from desbordante_ops.core.plan import Step, note
from desbordante_service.migrate import SCRIPT_LOCATION

# The plan step of a restore whose archive is at the code's head (no migration runs).
SCHEMA_AT_HEAD: Step = note("skip", "migrations: the archive's schema is the code's head")


@dataclass(frozen=True)
class SchemaPlan:
    """What restoring an archive of schema REVISION means for the code at HEAD."""

    revision: str | None
    head: str | None

    @property
    def migrate(self) -> bool:
        """True when the archive is older than the code: migrations run after the restore."""
        return self.revision != self.head

    @property
    def migration(self) -> str:
        """`from X to HEAD` when migrations run after the restore, else ""."""
        return f"from {self.revision or 'an empty database'} to {self.head}" if self.migrate else ""

    @property
    def summary(self) -> str:
        shown = self.revision or "empty database"
        if not self.migrate:
            return f"{shown} (the code's head)"
        return f"{shown}, older than the code's head {self.head}: migrations run after the restore"


def known_revisions(script: ScriptDirectory | None = None) -> list[str]:
    """Every revision of the code, head first."""
    script = script or ScriptDirectory(str(SCRIPT_LOCATION))
    return [revision.revision for revision in script.walk_revisions()]


def plan(revision: str | None, script: ScriptDirectory | None = None) -> SchemaPlan:
    """The plan for an archive of schema REVISION; Exit when the code does not know it."""
    script = script or ScriptDirectory(str(SCRIPT_LOCATION))
    head = script.get_current_head()
    if revision is not None and revision not in known_revisions(script):
        raise Exit(
            f"The archive's schema revision {revision} is newer than this code's head {head}: "
            "restore it with the release that wrote it (update this checkout first)."
        )
    return SchemaPlan(revision, head)
