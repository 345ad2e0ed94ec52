"""The verify Job: a release proves it can profile a dataset before the ledger records it.

After the migrate Job and the rollouts, deploy runs the release's Job `verify-<tag>-<hash>`
(k8s/base/verify.yaml, rendered with the release): the same image with the role `verify`
talks to the api Service inside the namespace, uploads a small CSV, creates an FD task, polls
it to the end, checks the exact FDs expected and deletes the dataset, one line per step; it
exits 0 only when every step passed (backend: desbordante_service/verify.py). It runs under
Pod Security `restricted`, and a NetworkPolicy lets it reach the api only.
- passed: its name and time go with the ledger record (release/ledger.py);
- failed: the deploy fails with its last log lines, nothing is recorded, the pods stay as they
  are and the message names `deploy.rollback`.
Every verification (a deploy's or `invoke verify`'s) leaves its outcome in the ConfigMap
`desbordante-verify` of the namespace (release, Job, time, result, last line), which `invoke
status` shows. The Job is created by server-side apply like the release's other objects, so
the next release's prune removes it; a finished Job also expires (ttlSecondsAfterFinished).
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import asdict, dataclass

from invoke import Context, Exit
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from desbordante_ops.cluster.kube import names
from desbordante_ops.cluster.kube.client import Kube, connect_or_step
from desbordante_ops.cluster.kube.errors import FORBIDDEN
from desbordante_ops.cluster.kube.objects import if_exists, now_iso, read_or_none
from desbordante_ops.cluster.manifests.render import Rendered, render_as
from desbordante_ops.cluster.release.context import ROLLOUT_TIMEOUT_SECONDS
from desbordante_ops.cluster.release.ledger import Record, live_tag, read
from desbordante_ops.cluster.release.lock import LEASE, current_holder, exclusive
from desbordante_ops.cluster.release.rights import denied
from desbordante_ops.cluster.release.rollout import (
    Deadline,
    explain_blocker,
    job_log_lines,
    wait_job,
)
from desbordante_ops.core.console import console, fail, ok
from desbordante_ops.core.plan import Plan, Step, execute, refused
from desbordante_ops.core.settings import EnvConfig

RESULT_CONFIG_MAP = "desbordante-verify"
PASSED, FAILED = "passed", "failed"
LOG_LINES = 20


class VerifyFailed(Exit):
    """A release's verify Job failed; WHAT says so without the advice to roll back (for
    callers that roll back themselves, like auto-update)."""

    def __init__(self, what: str, env: str) -> None:
        super().__init__(
            f"{what}. Nothing was recorded; the pods stay as they are: "
            f"`invoke deploy.rollback --env {env}` goes back to the previous release.",
            1,
        )
        self.what = what


@dataclass(frozen=True)
class Outcome:
    """The last verification of an environment."""

    release: str
    job: str
    at: str
    result: str
    detail: str = ""

    @property
    def passed(self) -> bool:
        return self.result == PASSED


def save(core: k8s.CoreV1Api, namespace: str, outcome: Outcome) -> None:
    """Keep OUTCOME in the namespace's ConfigMap `desbordante-verify` (replaced each time)."""
    body = k8s.V1ConfigMap(
        metadata=k8s.V1ObjectMeta(
            name=RESULT_CONFIG_MAP,
            labels=dict(names.CREATED_LABELS),
        ),
        data=asdict(outcome),
    )
    if not if_exists(core.replace_namespaced_config_map, RESULT_CONFIG_MAP, namespace, body):
        core.create_namespaced_config_map(namespace, body)


def last(core: k8s.CoreV1Api, namespace: str) -> Outcome | None:
    """The last verification of NAMESPACE (None: never verified)."""
    found = read_or_none(core.read_namespaced_config_map, RESULT_CONFIG_MAP, namespace)
    if found is None:
        return None
    data = found.data or {}
    return Outcome(
        data.get("release", "?"),
        data.get("job", "?"),
        data.get("at", "?"),
        data.get("result", "?"),
        data.get("detail", ""),
    )


def describe_job(rendered: Rendered) -> str:
    """The row target of the verify Job of RENDERED."""
    return (
        f"Job {rendered.namespace}/{rendered.verify_job} of {rendered.image}: verify (upload a "
        "CSV, profile it, check the FDs, delete it; at most --timeout)"
    )


def run_verify(
    k: Kube, rendered: Rendered, release: str, deadline: Deadline, env: str
) -> tuple[str, str]:
    """Run the verify Job of RENDERED (RELEASE: its tag) to its end; (the Job, when it passed).

    Exit 1 with its last log lines when it fails or cannot start; the outcome is saved either
    way.
    """
    namespace, name = rendered.namespace, rendered.verify_job
    job = rendered.find("Job", name)
    if_exists(k.batch.delete_namespaced_job, name, namespace, propagation_policy="Background")
    k.objects.apply(job, force=True)
    state, blocker = wait_job(k, namespace, name, deadline)
    lines = job_log_lines(k.core, namespace, name, names.VERIFY, LOG_LINES)
    if blocker is None and state == "succeeded":
        when = now_iso()
        for line in lines:
            console.print(f"    {line}", markup=False, highlight=False)
        save(k.core, namespace, Outcome(release, name, when, PASSED, lines[-1] if lines else ""))
        ok(f"{release} verified ({name})")
        return name, when
    if blocker is not None:
        why = explain_blocker(k, namespace, blocker)
    else:
        for line in lines:
            fail(f"  {line}")
        why = (lines[-1] if lines else "") or (
            "did not finish in time" if state != "failed" else "it failed without output"
        )
    save(k.core, namespace, Outcome(release, name, now_iso(), FAILED, why))
    raise VerifyFailed(f"The verify Job {name} of {release} failed: {why}", env)


def _readable_records(k: Kube) -> list[Record]:
    """Every record of the ledger, or none when this kubeconfig may not read it (the tag of
    an image pinned to a digest is then unknown: --tag names it)."""
    try:
        return list(read(k.core).values())
    except ApiException as exc:
        if exc.status != FORBIDDEN:
            raise
        return []


def verify_plan(c: Context, cfg: EnvConfig, k: Kube, tag: str | None, stack: ExitStack) -> Plan:
    """`invoke verify`: the verify Job of the release that runs (or TAG), under the deploy
    lock (so it never interleaves with a deploy); its outcome is kept for `invoke status`."""
    namespace = cfg.namespace
    title = f"verify {namespace}"
    live = tag or live_tag(k.apps, namespace, cfg.toolkit.IMAGE_NAME, _readable_records(k))
    if live is None:
        return Plan(
            title,
            [
                refused(
                    "run",
                    f"the verify Job of {namespace}",
                    f"Nothing runs in {namespace} to verify; deploy it first, or pass --tag.",
                )
            ],
        )
    api = read_or_none(k.apps.read_namespaced_deployment, names.API, namespace)
    rendered = render_as(c, cfg, live, api.spec.template.spec.containers[0].image if api else "")
    lease = f"Lease {namespace}/{LEASE}"
    try:
        holder = current_holder(k.coordination, namespace)
    except ApiException as exc:
        if exc.status != FORBIDDEN:
            raise
        why = denied(k, namespace, cfg.name, f"use the deploy lock ({lease})", "run verify")
        return Plan(title, [refused("take", f"the deploy lock ({lease})", why)])
    timeout = ROLLOUT_TIMEOUT_SECONDS

    def take() -> None:
        stack.enter_context(exclusive(k, namespace, cfg.name, f"verify {live}", timeout))

    def verify() -> None:
        run_verify(k, rendered, live, Deadline.after(timeout), cfg.name)

    job = rendered.find("Job", rendered.verify_job)
    held = f", held by {holder}: at most {timeout} s" if holder else ""
    return Plan(
        title,
        [
            Step("wait" if holder else "take", f"the deploy lock ({lease}){held}", take),
            Step(
                "run",
                describe_job(rendered),
                verify,
                check=lambda: k.objects.apply(job, force=True, dry_run=True),
            ),
        ],
    )


def run_verify_task(c: Context, cfg: EnvConfig, tag: str | None, dry_run: bool) -> None:
    """`invoke verify --env ENV`: plan it from the cluster, then run it (or print it)."""
    k, why = connect_or_step(cfg)
    with ExitStack() as stack:
        plan = (
            Plan(f"verify {cfg.namespace}", why)
            if k is None
            else verify_plan(c, cfg, k, tag, stack)
        )
        execute(plan, dry_run)
