"""The rules of a prod deploy: only a release stage ran and verified, exactly as stage ran it.

Prod is semi-automatic: only a release tag vX.Y.Z (release/context.py checks that), only one
the ledger records as verified on stage (release/ledger.py), and an explicit confirmation
unless --yes. Prod then runs exactly the image stage ran: the recorded `repo@sha256:...` when
stage pulled it from a registry (re-rendered pinned to that digest); when the image was loaded
into k3s without a registry (a local `sha256:` image ID), the ID of IMAGE_NAME:tag in k3s must
equal the recorded one. The gate reads and decides while the plan is built, so a refusal is
one line before anything changes, in a dry run too; only the confirmation is a step.
"""

from __future__ import annotations

from invoke import Exit

from desbordante_ops.cluster.host.k3s import image_in_k3s
from desbordante_ops.cluster.manifests.render import render_as
from desbordante_ops.cluster.release.context import Release
from desbordante_ops.cluster.release.ledger import (
    LOCAL_ID,
    WHERE,
    Record,
    ledger,
    ledger_key,
    short_id,
)
from desbordante_ops.core.plan import Step, note


def stage_record(x: Release, stage_namespace: str) -> Record:
    """Stage's verified record of X's tag; Exit when stage never ran or never verified it."""
    tag = x.tag
    entry = ledger(x.ledger_core).get(ledger_key(stage_namespace, tag))
    if entry is None:
        raise Exit(
            f"{tag} never ran on stage (no entry in the release ledger {WHERE}); run "
            f"`invoke deploy --env stage --tag {tag}` and check it there first."
        )
    if not entry.verified:
        raise Exit(
            f"{tag} ran on stage but was never verified there (its ledger entry has no verify "
            f"Job): run `invoke deploy --env stage --tag {tag}` again, which verifies it."
        )
    return entry


def _local_image(x: Release, entry: Record) -> None:
    """Exit unless k3s holds under X's image exactly the local image stage ran."""
    if not LOCAL_ID.match(entry.image_id):
        raise Exit(
            f"The ledger's image ID for {entry.tag} ({entry.image_id}) is neither a registry "
            f"digest nor a local image ID; a cluster admin can record it again "
            f"(`invoke releases.record --env stage --tag {entry.tag}`)."
        )
    found = image_in_k3s(x.c, x.image)
    if found != entry.image_id:
        have = f"has {short_id(found)}" if found else "has no image"
        raise Exit(
            f"Stage ran {entry.tag} as the local image {short_id(entry.image_id)} (loaded into "
            f"k3s without a registry), but k3s on this machine {have} under {x.image}: deploy "
            "prod on the k3s server with the image stage ran, or ship releases through a "
            "registry."
        )


def _confirm(x: Release, entry: Record) -> None:
    question = (
        f"Deploy {x.tag} ({short_id(entry.image_id)}, verified on stage {entry.verified_at}) "
        "to PROD? Type the tag to confirm: "
    )
    try:
        answer = x.options.confirm(question)
    except EOFError:
        raise Exit("No terminal to confirm on; pass --yes to deploy to prod.") from None
    if answer.strip() != x.tag:
        raise Exit("Not confirmed; nothing was deployed.")


def gate(x: Release, stage_namespace: str) -> tuple[Release, list[Step]]:
    """The prod rules for X: the release to deploy (pinned to the digest stage ran) and the
    plan's rows (what was checked; the confirmation unless --yes)."""
    entry = stage_record(x, stage_namespace)
    pinned = entry.digest_ref
    if pinned is None:
        _local_image(x, entry)
        checked = x
    else:
        checked = x.with_rendered(render_as(x.c, x.cfg, x.tag, pinned))
    steps = [
        note(
            "check",
            f"prod gate: {x.tag} ran on stage and was verified ({entry.verified_by} at "
            f"{entry.verified_at}); prod runs {checked.image}",
        )
    ]
    if not x.options.yes:
        steps.append(
            Step("ask", f"type {x.tag} to confirm (--yes skips it)", lambda: _confirm(x, entry))
        )
    return checked, steps
