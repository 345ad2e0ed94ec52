"""Deploy one release to a cluster environment: the one orchestrator, as a plan.

`deploy_plan` reads the cluster and returns the steps, in order:
the deploy lock -> (prod) the gate and the confirmation -> the namespace (created through the
API by an admin, never applied) -> the Secrets the pods mount (a missing one stops the run) ->
the image pull Secret -> what the manifests need from the cluster (Traefik's CRDs, a default
StorageClass) -> (rollback) the schema check of the old image -> a migrate Job that failed
before, deleted -> take-over of objects deployed by kubectl's client-side apply -> server-side
apply of every object (release/apply.py: the diff above the table shows what changes) ->
prune -> wait for the migrate Job -> wait for every rollout -> the verify Job
(release/verify.py) -> record the verified release in the ledger -> Traefik's cluster-wide
configuration (manifests/traefik_config.py). A dry run prints exactly these rows; the real
run executes them (core/plan.py). All waits share one `--timeout` and stop early when a pod
cannot start (release/rollout.py); a failure prints the failing pods' events and last log
lines and exits 1.
No step carries a secret: Secrets are never rendered, never printed.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import yaml
from invoke import Context, Exit
from kubernetes.client.exceptions import ApiException

from desbordante_ops.cluster.kube import names
from desbordante_ops.cluster.kube.errors import FORBIDDEN, describe_error
from desbordante_ops.cluster.kube.objects import can_i, ensure_namespace, read_or_none
from desbordante_ops.cluster.kube.resources import FIELD_MANAGER, describe
from desbordante_ops.cluster.manifests.render import render, with_pull_secret
from desbordante_ops.cluster.manifests.traefik_config import traefik_steps
from desbordante_ops.cluster.release import apply, lock, prereqs
from desbordante_ops.cluster.release.context import Options, Release, check_tag, open_release
from desbordante_ops.cluster.release.gate import gate
from desbordante_ops.cluster.release.ledger import WHERE, not_recorded, record_release
from desbordante_ops.cluster.release.rights import denied
from desbordante_ops.cluster.release.rollout import (
    Deadline,
    diagnose,
    explain_blocker,
    fail_pending,
    job_state,
    wait_job,
    wait_rollouts,
)
from desbordante_ops.cluster.release.verify import describe_job, run_verify
from desbordante_ops.cluster.secrets.pull import PULL_SECRET, ensure_pull_secret, registry_of
from desbordante_ops.cluster.secrets.specs import SPECS
from desbordante_ops.core.console import ok
from desbordante_ops.core.plan import Plan, Step, execute, note, refused, unknown
from desbordante_ops.core.settings import EnvConfig
from desbordante_ops.image.push import auth_from_environment
from desbordante_ops.image.tags import is_release_tag

STAGE_NAMESPACE = "desbordante-stage"
# Steps the caller adds before the apply (rollback's schema check), given the release.
BeforeApply = Callable[["Run"], list[Step]]


@dataclass
class Run:
    """What the steps of one deploy share while they run: the release (the prod gate may pin
    it), the lock, one deadline for every wait, and whether anything changed."""

    x: Release
    stack: ExitStack
    changed: bool = False
    touched: list[bool] = field(default_factory=list)  # [True] once a step wrote to it
    verified: tuple[str, str] = ("", "")  # (verify Job, when it passed)
    _deadline: Deadline | None = field(default=None, repr=False)

    @property
    def deadline(self) -> Deadline:
        if self._deadline is None:
            self._deadline = self.x.deadline()
        return self._deadline


def _namespace_exists(x: Release) -> bool:
    """Whether X's namespace exists (one read for the whole plan). A user who may not read
    Namespace objects works inside an existing one."""
    try:
        return read_or_none(x.k.core.read_namespace, x.namespace) is not None
    except ApiException as exc:
        if exc.status != FORBIDDEN:
            raise
        return True


def _lock(run: Run, action: str, locked: bool, exists: bool) -> list[Step]:
    x = run.x
    k, namespace = x.k, x.namespace
    lease = f"Lease {namespace}/{lock.LEASE}"
    if locked:
        return [note("hold", f"the deploy lock ({lease}), taken by the caller")]
    if not exists:
        return [note("skip", f"the deploy lock: namespace {namespace} does not exist yet")]

    def take() -> None:
        run.stack.enter_context(lock.exclusive(k, namespace, x.cfg.name, action, x.options.timeout))

    try:
        holder = lock.current_holder(k.coordination, namespace)
    except ApiException as exc:
        if exc.status != FORBIDDEN:
            raise
        why = denied(k, namespace, x.cfg.name, f"use the deploy lock ({lease})")
        return [refused("take", f"the deploy lock ({lease})", why)]
    if holder is None:
        return [Step("take", f"the deploy lock ({lease})", take)]
    return [
        Step(
            "wait",
            f"the deploy lock ({lease}), held by {holder}: at most --timeout, then take it "
            "(the apply converges on what the cluster has by then)",
            take,
        )
    ]


def _namespace(x: Release, exists: bool) -> list[Step]:
    """Create the namespace through the API when it is missing (that needs a cluster admin)."""
    if exists:
        return []
    namespace, core = x.namespace, x.k.core
    found = x.rendered.of_kind("Namespace")
    labels = dict(found[0]["metadata"].get("labels") or {}) if found else {}
    what = f"namespace {namespace} (Pod Security: restricted)"
    if not can_i(x.k.authorization, "create", "namespaces"):
        return [
            refused(
                "create",
                what,
                f"Namespace {namespace} does not exist and this kubeconfig may not create it; "
                f"ask a cluster admin to run `invoke secrets.generate --env {x.cfg.name}` once.",
            )
        ]

    def create() -> None:
        if ensure_namespace(core, namespace, labels or dict(names.NAMESPACE_LABELS)):
            ok(f"namespace {namespace} created")

    return [Step("create", what, create)]


def _secrets(x: Release) -> list[Step]:
    """A row stopping the run for every Secret the pods mount that does not exist."""
    rows = []
    for spec in SPECS:
        what = f"Secret {x.namespace}/{spec.name}"
        try:
            found = read_or_none(x.k.core.read_namespaced_secret, spec.name, x.namespace)
        except ApiException as exc:
            rows.append(unknown(what, describe_error(exc)))
            continue
        if found is None:
            rows.append(
                refused(
                    "stop",
                    f"{what} is missing",
                    f"Secrets missing in {x.namespace}: run `invoke secrets.generate --env "
                    f"{x.cfg.name}` first.",
                )
            )
    return rows


def _pull_secret(x: Release) -> tuple[Release, list[Step]]:
    """The pull Secret's step and the release referencing it (REGISTRY_USERNAME/PASSWORD
    given: created or updated; else an existing one is kept and still referenced)."""
    auth, namespace = x.options.registry_auth, x.namespace
    what = f"Secret {namespace}/{PULL_SECRET} (pull credential for {registry_of(x.image)})"
    try:
        existing = read_or_none(x.k.core.read_namespaced_secret, PULL_SECRET, namespace)
    except ApiException as exc:
        return x, [unknown(what, describe_error(exc))]
    if auth is None and existing is None:
        return x, []
    pinned = x.with_rendered(with_pull_secret(x.rendered, PULL_SECRET))
    if auth is None:
        return pinned, [note("keep", what)]

    def write() -> None:
        ensure_pull_secret(x.k.core, namespace, x.image, auth)

    return pinned, [Step("update" if existing is not None else "create", what, write)]


def _prerequisites(run: Run) -> list[Step]:
    """One step waiting (bounded, at once when all are there) for what the manifests need
    from the cluster; its row says what is there now."""
    x = run.x
    docs = x.rendered.docs
    parts, missing = [], False
    for kind in prereqs.custom_kinds(docs):
        present = prereqs.served(x.k.custom, kind)
        parts.append(f"{kind} served" + ("" if present else " (not yet)"))
        missing = missing or not present
    if prereqs.needs_storage_class(docs):
        try:
            default = prereqs.default_storage_class(x.k.storage)
        except ApiException as exc:
            if exc.status != FORBIDDEN:
                raise
            parts.append("a default StorageClass (not checked: this kubeconfig may not list them)")
        else:
            parts.append(
                f"default StorageClass {default}"
                if default
                else "a default StorageClass (none yet)"
            )
            missing = missing or not default
    if not parts:
        return []

    def wait() -> None:
        prereqs.wait_for_prerequisites(x.k, x.namespace, docs, run.deadline)

    return [Step("wait" if missing else "check", "; ".join(parts), wait)]


def _failed_job(run: Run) -> list[Step]:
    """A migrate Job that failed before: deleted, so that the apply creates it again."""
    x = run.x
    job = x.rendered.migrate_job
    if not job or job_state(x.k, x.namespace, job) != "failed":
        return []

    def delete() -> None:
        x.k.batch.delete_namespaced_job(job, x.namespace, propagation_policy="Background")

    what = f"Job {x.namespace}/{job} (failed before; the apply runs it again)"
    return [Step("delete", what, delete)]


def _new_namespace_preview(docs: list[dict[str, Any]]) -> apply.Preview:
    """What applying into a namespace that does not exist yet creates: everything."""
    return apply.Preview(changes=[apply.Change(doc, None, doc) for doc in docs])


def _apply(run: Run, recreate: list[str], exists: bool) -> tuple[list[Step], list[str]]:
    """The take-over, apply and prune steps, and the diff (RECREATE: `Kind/name`s deleted by
    an earlier step; EXISTS: the namespace does)."""
    x = run.x
    k, namespace = x.k, x.namespace
    docs = x.rendered.applied_docs
    keep = [f"Job/{x.rendered.verify_job}"] if x.rendered.verify_job else []
    found = (
        apply.preview(k, namespace, docs, keep, recreate)
        if exists
        else _new_namespace_preview(docs)
    )
    if found.refusals:
        return _refusals(run, found.refusals), []
    rows: list[Step] = []
    if found.takeovers:
        takeovers = found.takeovers

        def take_over() -> None:
            run.touched.append(True)
            apply.take_over(k, takeovers)

        rows.append(
            Step(
                "take over",
                f"{len(takeovers)} objects deployed by kubectl's client-side apply: their "
                f"fields become {FIELD_MANAGER}'s (server-side apply), the last-applied "
                "annotation goes",
                take_over,
            )
        )
    rows += [note("take over", f"{change.name}: {change.conflicts}") for change in found.conflicts]
    changed = found.changed
    if changed:

        def apply_all() -> None:
            run.touched.append(True)
            apply.apply_all(k, docs)
            run.changed = True

        kept = len(docs) - len(changed)
        rows.append(
            Step(
                "apply",
                f"{len(docs)} objects, server-side apply as {FIELD_MANAGER}: {len(changed)} "
                "change (the diff above)" + (f", {kept} stay as they are" if kept else ""),
                apply_all,
            )
        )
    else:
        rows.append(note("keep", "the cluster already matches the manifests"))
    for obj in found.prunes:

        def delete(obj: dict[str, Any] = obj) -> None:
            run.touched.append(True)
            apply.prune(k, [obj])
            run.changed = True

        rows.append(Step("delete", f"{describe(obj)} (no longer rendered: prune)", delete))
    title = f"Changes for {namespace} (live -> after the apply)"
    diff = apply.diff_lines(found)
    return rows, ([title, *diff] if diff else [f"{title}: none"])


def _refusals(run: Run, refusals: list[apply.Refusal]) -> list[Step]:
    x = run.x
    if all(r.status == FORBIDDEN for r in refusals):
        why = denied(x.k, x.namespace, x.cfg.name, "apply the release")
        return [refused("apply", f"{len(x.rendered.applied_docs)} objects", why)]
    return [
        refused(
            "apply",
            f"{r.what}: the server refuses it ({r.reason})",
            f"The API server refuses {r.what}: {r.reason}. Nothing was changed.",
        )
        for r in refusals
    ]


def _waits(run: Run) -> list[Step]:
    x = run.x
    k, namespace = x.k, x.namespace
    rows: list[Step] = []
    job = x.rendered.migrate_job
    if job:

        def migrate() -> None:
            state, blocker = wait_job(k, namespace, job, run.deadline)
            if blocker is not None:
                raise Exit(explain_blocker(k, namespace, blocker), 1)
            if state != "succeeded":
                diagnose(k, namespace, f"job-name={job}")
                reason = (
                    "did not succeed"
                    if state == "failed"
                    else f"not done after {x.options.timeout:.0f} s"
                )
                raise Exit(f"Migration job {job} {reason}; see the events and logs above.", 1)
            ok(f"migrations applied ({job})")

        rows.append(Step("wait", f"Job {namespace}/{job} (migrations)", migrate))
    workloads = [
        f"{kind}/{name}"
        for kind, group in (("Deployment", names.DEPLOYMENTS), ("StatefulSet", names.STATEFULSETS))
        for name in group
    ]

    def rollouts() -> None:
        pending, blocker = wait_rollouts(k, namespace, run.deadline)
        if blocker is not None:
            raise Exit(explain_blocker(k, namespace, blocker), 1)
        if pending:
            fail_pending(k, namespace, pending, run.deadline)

    rows.append(Step("wait", f"rollouts of {', '.join(workloads)} (at most --timeout)", rollouts))
    return rows


def _record(run: Run) -> list[Step]:
    x = run.x
    tag, image = x.tag, x.image
    target = f"{tag} as {image} in {WHERE}, verified by the verify Job"
    if not can_i(x.k.authorization, "patch", "configmaps", "", "desbordante-system"):
        why = f"this kubeconfig may not write the release ledger ({WHERE})"
        message = not_recorded(x.cfg, tag, why, is_release_tag(tag))
        return [note("skip", f"record {tag}: {message}")]

    def record() -> None:
        job, when = run.verified
        record_release(x.k, x.cfg, image, tag, job, when)

    return [Step("record", target, record)]


def _verify(run: Run) -> list[Step]:
    x = run.x
    if not x.rendered.verify_job:
        return []

    def verify() -> None:
        run.verified = run_verify(x.k, x.rendered, x.tag, run.deadline, x.cfg.name)

    return [Step("run", describe_job(x.rendered), verify)]


def deploy_plan(
    x: Release,
    stack: ExitStack,
    title: str = "",
    before_apply: BeforeApply | None = None,
    traefik: bool = True,
    locked: bool = False,
    touched: list[bool] | None = None,
) -> tuple[Plan, Run]:
    """The plan of deploying X (read from the cluster; nothing written) and its run state.

    BEFORE_APPLY adds steps before the apply (rollback's schema check); TRAEFIK: end with
    Traefik's cluster-wide configuration; LOCKED: the caller holds the deploy lock; TOUCHED
    gets True once a step writes to the cluster's objects (what auto-update asks after a
    failure).
    """
    run = Run(x, stack, touched=touched if touched is not None else [])
    exists = _namespace_exists(x)
    steps = _lock(run, title or f"deploy {x.tag}", locked, exists)
    if x.cfg.name == "prod":
        run.x, gated = gate(x, STAGE_NAMESPACE)
        steps += gated
    steps += _namespace(run.x, exists)
    steps += _secrets(run.x)
    run.x, pull = _pull_secret(run.x)
    steps += pull
    steps += _prerequisites(run)
    if before_apply is not None:
        steps += before_apply(run)
    failed = _failed_job(run)
    steps += failed
    recreate = [f"Job/{run.x.rendered.migrate_job}"] if failed else []
    applied, diff = _apply(run, recreate, exists)
    steps += applied
    steps += _waits(run)
    steps += _verify(run)
    steps += _record(run)
    if traefik:
        steps += traefik_steps(x.k, x.cfg)
    heading = title or f"deploy {x.tag} to {x.namespace}"
    return Plan(heading, steps, preface=diff), run


def deploy_release(
    x: Release,
    dry_run: bool = False,
    title: str = "",
    before_apply: BeforeApply | None = None,
    traefik: bool = True,
    locked: bool = False,
    touched: list[bool] | None = None,
) -> bool:
    """Plan and (unless DRY_RUN) run the deploy of X; True when it changed anything."""
    with ExitStack() as stack:
        plan, run = deploy_plan(x, stack, title, before_apply, traefik, locked, touched)
        execute(plan, dry_run)
    return run.changed


def unreachable_plan(c: Context, cfg: EnvConfig, tag: str, why: list[Step]) -> Plan:
    """The plan of a deploy whose cluster cannot be read (WHY): what the release holds."""
    rendered = render(c, cfg, tag)
    docs = rendered.applied_docs
    kinds = sorted({doc["kind"] for doc in docs})
    return Plan(
        f"deploy {tag} to {cfg.namespace}",
        [
            *why,
            note(
                "apply",
                f"{len(docs)} objects ({', '.join(kinds)}), server-side apply and prune; what "
                "changes needs the cluster",
            ),
            note("wait", f"Job {rendered.namespace}/{rendered.migrate_job} and the rollouts"),
            note("run", describe_job(rendered)),
            note("record", f"{tag} as {rendered.image} in {WHERE}"),
        ],
    )


def run_deploy(c: Context, cfg: EnvConfig, tag: str, options: Options, dry_run: bool) -> bool:
    """`invoke deploy`: plan TAG's release for CFG's environment and run it (or print it)."""
    x, why = open_release(c, cfg, tag, options)
    if x is None:
        execute(unreachable_plan(c, cfg, tag, why), dry_run)
        return False
    return deploy_release(x, dry_run)


RENDER_HEADER = (
    "# What `invoke deploy` applies. Left out: the Namespace (a cluster admin creates\n"
    "# it) and the verify Job (deploy runs it after the rollouts); --all shows them.\n"
)


def manifests_text(c: Context, cfg: EnvConfig, tag: str, everything: bool) -> str:
    """What `deploy.render` prints: the objects deploy applies (EVERYTHING: all rendered),
    with the pull Secret referenced when registry credentials are set, as deploy does."""
    check_tag(cfg, tag)
    pull_secret = PULL_SECRET if auth_from_environment() else None
    rendered = render(c, cfg, tag, pull_secret=pull_secret)
    if everything:
        return rendered.text
    return RENDER_HEADER + yaml.safe_dump_all(rendered.applied_docs, sort_keys=False)
