"""One auto-update cycle: stage follows a branch (main) by itself, pulled from the server.

1. Newest image: `git ls-remote` gives the commit the branch is at and the release tags vX.Y.Z
   at that commit; the registry is asked for those tags, then for the `<short sha>` tags CI
   gives main's commits (source.SHORT_SHA_LENGTHS). An image counts only when its config's
   `org.opencontainers.image.revision` label is that very commit (anything else is not CI's
   build of it: skipped with a note). A release tag wins over the short sha: stage must run
   vX.Y.Z for prod to accept it.
2. Compare with what stage runs (the api Deployment's image, its digest from the spec or the
   kubelet's image ID) and, for a release tag, with the release ledger. The same digest: nothing
   happens. A digest whose rollout failed before: skipped (only a newer image is tried). The
   digest auto-update itself deployed, while stage now runs something else: a person changed
   stage by hand (e.g. `deploy.rollback`), and auto-update waits for a newer image.
3. Newer: under the deploy lock (release/lock.py; held -> this cycle skips), the commit's own
   `k8s/` and `env/` are exported (`git archive`), rendered pinned to `repo@sha256:...` and
   deployed by the same deploy plan as `invoke deploy` (server-side apply with prune, migrate
   Job, rollout waits, the verify Job, ledger record, diagnostics).
4. A failed deploy after anything was applied (a rollout that does not finish, a verify Job
   that fails) marks the digest broken and rolls back to the release stage ran before
   (release/rollback.py: its own schema check, then a deploy of it, rendered from its commit);
   the failure is reported by that cycle only, and that image is never tried again.
The outcome and the state land in the state file (autoupdate/statefile.py);
`autoupdate.status` reads it.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from invoke import Context, Exit

from desbordante_ops.cluster.autoupdate.statefile import Broken, Deployed, Seen, State
from desbordante_ops.cluster.kube import names
from desbordante_ops.cluster.kube.client import Kube
from desbordante_ops.cluster.kube.errors import TRANSPORT_ERRORS, describe_error
from desbordante_ops.cluster.kube.objects import now_iso, read_or_none
from desbordante_ops.cluster.release import lock
from desbordante_ops.cluster.release.context import Options, Release
from desbordante_ops.cluster.release.deploy import deploy_release
from desbordante_ops.cluster.release.ledger import (
    history,
    ledger,
    ledger_key,
    live_tag,
    running_image_ids,
    short_id,
)
from desbordante_ops.cluster.release.rollback import schema_check
from desbordante_ops.cluster.release.rollout import Clock
from desbordante_ops.cluster.release.verify import VerifyFailed
from desbordante_ops.core.console import fail, ok, step, warn
from desbordante_ops.core.settings import EnvConfig
from desbordante_ops.image import source
from desbordante_ops.image.refs import DIGEST_REF
from desbordante_ops.image.registry import ImageInfo, Registry, RegistryError
from desbordante_ops.image.tags import is_release_tag

# Outcomes: what a cycle did. FAILED and ERROR make `autoupdate.run` exit 1 (once per failure).
DEPLOYED, CURRENT, WAITING, SKIPPED, BROKEN, HELD, FAILED, ERROR = (
    "deployed",
    "current",
    "waiting",
    "skipped",
    "broken",
    "held",
    "failed",
    "error",
)
FAILURES = (FAILED, ERROR)
# What a deploy (and a rollback) of a cycle ends with when it fails: one line, or the API
# server gone away mid-deploy (both make a touched image broken, then roll it back).
DEPLOY_FAILURES: tuple[type[BaseException], ...] = (Exit, *TRANSPORT_ERRORS)
ROLLBACK_FAILURES: tuple[type[BaseException], ...] = (*DEPLOY_FAILURES, RegistryError)


@dataclass(frozen=True)
class Report:
    """The outcome of one cycle, one line for the journal and for status."""

    kind: str
    message: str

    @property
    def ok(self) -> bool:
        return self.kind not in FAILURES


@dataclass(frozen=True)
class Running:
    """What the api Deployment runs: IMAGE as in its spec, its DIGEST ("" unknown), its TAG."""

    image: str = ""
    repository: str = ""
    digest: str = ""
    tag: str | None = None


@dataclass
class Cycle:
    """What one cycle works with. SETTINGS(root) loads the environment's settings with the
    env files under ROOT (a commit's export, or the checkout)."""

    c: Context
    cfg: EnvConfig  # the checkout's settings: namespace, image to follow
    k: Kube
    registry: Registry
    repo: Path  # the bare mirror to fetch into (source.ensure_mirror)
    remote: str  # URL or path of the remote
    branch: str
    settings: Callable[[Path], EnvConfig]
    registry_auth: dict[str, str] | None = None
    timeout: float = 600
    clock: Clock | None = None

    def release(self, cfg: EnvConfig, tag: str, image: ImageInfo | Running) -> Release:
        """TAG pinned to IMAGE's digest with CFG's manifests, deployed as auto-update does
        (no prompt: stage only; under the cycle's own lock)."""
        options = Options(
            yes=True, timeout=self.timeout, registry_auth=self.registry_auth, clock=self.clock
        )
        return Release.prepare(
            self.c, cfg, self.k, tag, options, image_name=image.repository, digest=image.digest
        )


def check_env(env: str) -> str:
    """ENV if auto-update may drive it: stage, never prod."""
    if env == "prod":
        raise Exit(
            "prod is never updated automatically: it stays a person's decision "
            "(`invoke deploy --env prod --tag vX.Y.Z` deploys the digest stage ran)."
        )
    return env


def find_image(registry: Registry, head: source.Head) -> tuple[ImageInfo | None, str]:
    """The newest image of HEAD (release tag first, then short shas), or None with why."""
    notes: list[str] = []
    for tag in (*head.release_tags, *source.short_shas(head.sha)):
        info = registry.image_info(tag)
        if info is None:
            continue
        if info.revision != head.sha:
            built = info.revision[:12] or "no revision label"
            notes.append(f"{tag} was built from {built}, not {head.short}: not CI's image, skipped")
            continue
        return info, ""
    return None, "; ".join(notes) or "CI has not published it yet"


def newest(
    c: Context, registry: Registry, mirror: Path, remote: str, branch: str
) -> tuple[source.Head, ImageInfo | None, str]:
    """Step 1: where BRANCH of REMOTE is, and its newest image (None: why not)."""
    # The state directory holding the mirror is root's only (0700), like the files in it; the
    # mirror would otherwise create it as `mkdir -p` does (0755).
    mirror.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    source.ensure_mirror(c, mirror)
    head = source.branch_head(c, mirror, remote, branch)
    image, note = find_image(registry, head)
    return head, image, note


def running_release(k: Kube, cfg: EnvConfig) -> Running:
    """The release the api Deployment of CFG's namespace runs (empty when none)."""
    namespace = cfg.namespace
    deployment = read_or_none(k.apps.read_namespaced_deployment, names.API, namespace)
    if deployment is None:
        return Running()
    containers = deployment.spec.template.spec.containers
    image = next((c.image for c in containers if c.name == names.API), containers[0].image)
    pinned = DIGEST_REF.match(image)
    if pinned is None:
        ids = running_image_ids(k.core, namespace, image)
        found = [DIGEST_REF.match(i) for i in ids]
        pinned = found[0] if len(found) == 1 else None
    recorded = history(k.core, namespace)
    tag = live_tag(k.apps, namespace, cfg.toolkit.IMAGE_NAME, recorded)
    if pinned is None:
        return Running(image, "", "", tag)
    return Running(image, pinned["repo"], pinned["digest"], tag)


def is_current(k: Kube, namespace: str, image: ImageInfo, running: Running) -> bool:
    """True when stage runs IMAGE already (and, for a release tag, the ledger records it)."""
    if running.digest != image.digest:
        return False
    if not is_release_tag(image.tag):
        return True
    entry = ledger(k.core).get(ledger_key(namespace, image.tag))
    return entry is not None and entry.image_id.endswith(image.digest)


def commit_settings(x: Cycle, root: Path, sha: str) -> EnvConfig:
    """The settings of commit SHA: its k8s/ and env/ exported under ROOT."""
    source.export(x.c, x.repo, sha, root)
    cfg = x.settings(root)
    if cfg.namespace != x.cfg.namespace:
        raise Exit(
            f"Commit {sha[:12]} deploys {x.cfg.name} into {cfg.namespace}, not {x.cfg.namespace}; "
            "auto-update does not move environments: deploy it by hand."
        )
    return cfg


def roll_back(x: Cycle, previous: Running, failed_tag: str) -> str:
    """Deploy PREVIOUS again (schema check first); what happened, in a few words."""
    if not previous.digest:
        return "no earlier registry image is known to go back to: stage stays as it is"
    try:
        info = x.registry.image_info(previous.digest)
        commit = info.revision if info is not None and source.SHA.match(info.revision) else ""
        tag = previous.tag or commit[: source.SHORT_SHA_LENGTHS[0]]
        if not tag:
            return f"cannot tell which release {short_id(previous.digest)} was: stage stays as is"
        with tempfile.TemporaryDirectory(prefix="desbordante-rollback-") as tmp:
            # Its own manifests when its commit is known; the checkout's otherwise.
            cfg = commit_settings(x, Path(tmp), commit) if commit else x.cfg
            back = x.release(cfg, tag, previous)
            deploy_release(back, locked=True, before_apply=schema_check(failed_tag))
    except ROLLBACK_FAILURES as error:
        why = (
            error.message
            if isinstance(error, Exit)
            else error
            if isinstance(error, RegistryError)
            else describe_error(error)
        )
        return f"the rollback to {previous.tag or short_id(previous.digest)} failed too: {why}"
    return f"rolled back to {tag} ({short_id(previous.digest)})"


def deploy_image(x: Cycle, state: State, head: source.Head, image: ImageInfo) -> Report:
    """Deploy IMAGE (of HEAD) under the lock held by the caller; roll back when it fails."""
    previous = running_release(x.k, x.cfg)
    if is_current(x.k, x.cfg.namespace, image, previous):
        return Report(CURRENT, f"stage runs {image.tag} ({short_id(image.ref)}) already")
    step(f"Deploying {image.tag} ({short_id(image.ref)}) of {head.branch} to {x.cfg.namespace}")
    source.fetch_branch(x.c, x.repo, x.remote, head.branch)
    touched: list[bool] = []
    try:
        with tempfile.TemporaryDirectory(prefix="desbordante-autoupdate-") as tmp:
            cfg = commit_settings(x, Path(tmp), head.sha)
            deploy_release(x.release(cfg, image.tag, image), locked=True, touched=touched)
    except DEPLOY_FAILURES as error:
        if not touched:
            raise  # nothing changed in the cluster: an error, tried again next cycle
        if isinstance(error, VerifyFailed):
            why = error.what  # its advice to roll back is what this cycle does next
        elif isinstance(error, Exit):
            why = str(error.message)
        else:
            why = describe_error(error)
        fail(f"{image.tag} failed: {why}")
        broken = Broken(image.tag, head.sha, now_iso(), why)
        state.broken[image.digest] = broken
        broken.rollback = roll_back(x, previous, image.tag)
        return Report(
            FAILED,
            f"{image.tag} ({short_id(image.ref)}) failed to roll out or verify and will not be "
            f"retried; {broken.rollback}",
        )
    state.deployed = Deployed(image.tag, image.digest, head.sha, now_iso())
    return Report(DEPLOYED, f"deployed {image.tag} ({short_id(image.ref)}) of {head.branch}")


def decide(x: Cycle, state: State) -> Report:
    """Steps 1-4 of the module docstring."""
    head, image, note = newest(x.c, x.registry, x.repo, x.remote, x.branch)
    if image is None:
        state.seen = Seen(commit=head.sha, note=note)
        return Report(WAITING, f"no image of {x.branch} at {head.short} yet ({note})")
    state.seen = Seen(head.sha, image.tag, image.digest, image.revision)
    known = state.broken.get(image.digest)
    if known is not None:
        return Report(
            BROKEN,
            f"{image.tag} ({short_id(image.ref)}) failed to roll out or verify at {known.at}; "
            f"waiting for a newer image of {x.branch}",
        )
    running = running_release(x.k, x.cfg)
    if is_current(x.k, x.cfg.namespace, image, running):
        return Report(CURRENT, f"stage runs {image.tag} ({short_id(image.ref)}): up to date")
    if state.deployed.digest == image.digest != running.digest:
        return Report(
            HELD,
            f"stage was changed by hand after auto-update deployed {image.tag} (it runs "
            f"{running.tag or running.image or 'nothing'}); waiting for a newer image",
        )
    try:
        who = lock.identity(f"autoupdate {image.tag}")
        with lock.held(x.k, x.cfg.namespace, x.cfg.name, who):
            return deploy_image(x, state, head, image)
    except lock.Busy as busy:
        return Report(SKIPPED, f"skipped: another deploy holds {x.cfg.namespace} ({busy.holder})")


def record(state: State, report: Report) -> Report:
    """Put REPORT into STATE (outcome; last error for a failure, at the last check) and print
    it."""
    if report.kind in FAILURES:
        state.last_error, state.error_at = report.message, state.last_check
        fail(report.message)
    elif report.kind in (SKIPPED, HELD):
        warn(report.message)
    else:
        ok(report.message)
    state.outcome = f"{report.kind}: {report.message}"
    return report


def run_cycle(x: Cycle, state: State) -> Report:
    """One cycle on STATE (updated in place: last check, outcome, errors)."""
    state.branch = x.branch
    state.last_check = now_iso()
    try:
        report = decide(x, state)
    except (Exit, RegistryError) as error:
        report = Report(ERROR, str(error.message if isinstance(error, Exit) else error))
    except TRANSPORT_ERRORS as error:  # the API server went away mid-cycle: next cycle retries
        report = Report(ERROR, f"Kubernetes API call failed: {describe_error(error)}")
    return record(state, report)
