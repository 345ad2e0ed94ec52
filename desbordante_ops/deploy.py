"""`invoke deploy [--env] [--tag] [--yes]`, `deploy.render`, `deploy.teardown`.

deploy: render the overlay with the image tag -> show `kubectl diff` -> apply -> wait for the
migrate Job of the release -> wait for every Deployment and StatefulSet rollout (progress bars)
-> on failure print the failing pods' events and last log lines and exit non-zero.
Prod is semi-automatic: only a release tag (vX.Y.Z), only one already deployed to stage
(recorded in the ConfigMap `desbordante-releases` of the stage namespace), and an explicit
confirmation unless --yes. No command line here carries a secret: Secrets are never rendered.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from invoke import Exit, task
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from desbordante_ops import imagetags, kube
from desbordante_ops import k8s_names as names
from desbordante_ops.config import REPO_ROOT, EnvConfig, load_config
from desbordante_ops.console import console, fail, ok, progress, step, warn

RELEASES_CONFIGMAP = "desbordante-releases"
ROLLOUT_TIMEOUT_SECONDS = 600
POLL_SECONDS = 2.0
LOG_TAIL_LINES = 30
EVENTS_PER_POD = 10
KEEP_ON_TEARDOWN = {"Namespace", "PersistentVolumeClaim"}

Confirm = Callable[[str], str]


# --- tags and prod rules ---------------------------------------------------------------------


def default_tag(root: Path = REPO_ROOT) -> str:
    """The image tag of the working tree: its release tag if HEAD has one, else the short sha."""
    return imagetags.revision(root).tags[0]


def image_ref(cfg: EnvConfig, tag: str) -> str:
    return f"{cfg['IMAGE_NAME']}:{tag}"


def check_prod_rules(tag: str, stage_releases: dict[str, str], yes: bool, confirm: Confirm) -> None:
    """Refuse anything but a confirmed release tag that stage has already run."""
    if not imagetags.is_prod_pushable(tag):
        raise Exit(f"prod takes only a release tag vX.Y.Z; {tag!r} is not one (tag a release).")
    if tag not in stage_releases:
        raise Exit(
            f"{tag} was never deployed to stage; run `invoke deploy --env stage --tag {tag}` "
            "and check it there first."
        )
    if yes:
        return
    try:
        answer = confirm(f"Deploy {tag} to PROD? Type the tag to confirm: ")
    except EOFError:
        raise Exit("No terminal to confirm on; pass --yes to deploy to prod.") from None
    if answer.strip() != tag:
        raise Exit("Not confirmed; nothing was deployed.")


def releases(core: Any, namespace: str) -> dict[str, str]:
    """Tags recorded as deployed in NAMESPACE (tag -> JSON record); {} when none."""
    try:
        cm = core.read_namespaced_config_map(RELEASES_CONFIGMAP, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return {}
        raise
    return dict(cm.data or {})


def record_release(core: Any, namespace: str, tag: str, image: str) -> None:
    """Add TAG to the releases ConfigMap of NAMESPACE (created on first use)."""
    record = json.dumps({"image": image, "deployed_at": kube.now_iso()})
    body = k8s.V1ConfigMap(
        metadata=k8s.V1ObjectMeta(
            name=RELEASES_CONFIGMAP, labels={**kube.MANAGED_BY, names.PART_OF_LABEL: names.APP_NAME}
        ),
        data={tag: record},
    )
    try:
        core.patch_namespaced_config_map(RELEASES_CONFIGMAP, namespace, body)
    except ApiException as exc:
        if exc.status != 404:
            raise
        core.create_namespaced_config_map(namespace, body)


# --- manifests -------------------------------------------------------------------------------


def render_manifests(c: Any, env: str, tag: str) -> str:
    """The overlay of ENV rendered with image TAG (k8s/ and render.py belong to the manifests)."""
    from desbordante_ops import render as render_module

    return render_module.render(env, tag).text


def split_documents(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def migrate_job(docs: list[dict[str, Any]], tag: str) -> dict[str, Any] | None:
    name = names.migrate_job_name(tag)
    for doc in docs:
        if doc.get("kind") == "Job" and doc.get("metadata", {}).get("name") == name:
            return doc
    return None


@contextmanager
def manifest_file(docs: list[dict[str, Any]]) -> Iterator[str]:
    """DOCS written to a temporary file (no secrets are ever among them)."""
    with tempfile.NamedTemporaryFile("w", prefix="desbordante-", suffix=".yaml") as fh:
        yaml.safe_dump_all(docs, fh, sort_keys=False)
        fh.flush()
        yield fh.name


def kubectl_diff(c: Any, cfg: EnvConfig, path: str) -> bool:
    """Show `kubectl diff`; True when the cluster differs from the manifests."""
    result = c.run(kube.kubectl(cfg, "diff", "-f", path), warn=True, pty=False)
    if result.exited == 0:
        return False
    if result.exited == 1:
        return True
    raise Exit(f"kubectl diff failed (exit {result.exited}); see its output above.")


# --- waiting ---------------------------------------------------------------------------------


@dataclass
class Rollout:
    kind: str
    name: str
    desired: int
    ready: int
    done: bool
    problem: str = ""


def rollout_of(kind: str, obj: Any) -> Rollout:
    """How far the rollout of a Deployment or StatefulSet object is."""
    spec, status, meta = obj.spec, obj.status, obj.metadata
    desired = spec.replicas if spec.replicas is not None else 1
    updated = status.updated_replicas or 0
    ready = status.ready_replicas or 0
    observed = (status.observed_generation or 0) >= (meta.generation or 0)
    if kind == "Deployment":
        available = status.available_replicas or 0
        total = status.replicas or 0
        done = observed and updated == desired and available == desired and total == desired
        problem = ""
        for cond in status.conditions or []:
            if cond.type == "Progressing" and cond.reason == "ProgressDeadlineExceeded":
                problem = "progress deadline exceeded"
        return Rollout(kind, meta.name, desired, min(updated, available), done, problem)
    revision_ok = (
        status.update_revision is None or status.current_revision == status.update_revision
    )
    done = observed and updated == desired and ready == desired and revision_ok
    return Rollout(kind, meta.name, desired, min(updated, ready), done)


def rollouts(k: kube.Kube, namespace: str) -> list[Rollout]:
    items = [
        rollout_of("Deployment", k.apps.read_namespaced_deployment(name, namespace))
        for name in names.DEPLOYMENTS
    ]
    items += [
        rollout_of("StatefulSet", k.apps.read_namespaced_stateful_set(name, namespace))
        for name in names.STATEFULSETS
    ]
    return items


def wait_for(
    check: Callable[[], tuple[bool, list[Rollout]]],
    timeout: float,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> list[Rollout]:
    """Poll CHECK (with a progress bar per workload) until done or TIMEOUT; returns the last."""
    deadline = clock() + timeout
    with progress() as bar:
        tasks: dict[str, Any] = {}
        while True:
            finished, state = check()
            for item in state:
                label = f"{item.kind.lower()}/{item.name}"
                if label not in tasks:
                    tasks[label] = bar.add_task(label, total=max(item.desired, 1))
                bar.update(tasks[label], completed=item.ready if not item.done else item.desired)
            if finished or clock() >= deadline or any(item.problem for item in state):
                return state
            sleep(POLL_SECONDS)


def job_state(k: kube.Kube, namespace: str, name: str) -> str:
    """`missing`, `running`, `succeeded` or `failed`."""
    try:
        job = k.batch.read_namespaced_job(name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return "missing"
        raise
    for cond in job.status.conditions or []:
        if cond.status == "True" and cond.type in ("Complete", "Failed"):
            return "succeeded" if cond.type == "Complete" else "failed"
    return "running"


def wait_migrate(k: kube.Kube, namespace: str, name: str, timeout: float, **kw: Any) -> str:
    def check() -> tuple[bool, list[Rollout]]:
        state = job_state(k, namespace, name)
        done = state == "succeeded"
        return state in ("succeeded", "failed"), [Rollout("Job", name, 1, int(done), done)]

    wait_for(check, timeout, **kw)
    return job_state(k, namespace, name)


def wait_rollouts(k: kube.Kube, namespace: str, timeout: float, **kw: Any) -> list[Rollout]:
    def check() -> tuple[bool, list[Rollout]]:
        state = rollouts(k, namespace)
        return all(item.done for item in state), state

    return [item for item in wait_for(check, timeout, **kw) if not item.done]


# --- diagnostics -----------------------------------------------------------------------------


def failing_pods(core: Any, namespace: str, selector: str | None = None) -> list[Any]:
    pods = core.list_namespaced_pod(namespace, label_selector=selector or "").items
    bad = []
    for pod in pods:
        phase = pod.status.phase if pod.status else None
        statuses = (pod.status.container_statuses or []) if pod.status else []
        if phase == "Succeeded":
            continue
        if phase != "Running" or not all(s.ready for s in statuses):
            bad.append(pod)
    return bad


def diagnose(k: kube.Kube, namespace: str, selector: str | None = None) -> None:
    """Print events and the last log lines of every pod that is not healthy."""
    pods = failing_pods(k.core, namespace, selector)
    if not pods:
        warn("no failing pods found; check `kubectl get events -n " + namespace + "`")
    for pod in pods:
        name = pod.metadata.name
        fail(f"pod {name}: {pod.status.phase if pod.status else 'unknown'}")
        events = k.core.list_namespaced_event(
            namespace, field_selector=f"involvedObject.name={name}"
        ).items
        for event in events[-EVENTS_PER_POD:]:
            console.print(
                f"    [dim]event[/] {event.type} {event.reason}: {event.message}", soft_wrap=True
            )
        for container in pod.spec.containers:
            try:
                logs = k.core.read_namespaced_pod_log(
                    name, namespace, container=container.name, tail_lines=LOG_TAIL_LINES
                )
            except ApiException:
                continue
            console.print(f"    [dim]last log lines of {container.name}:[/]")
            for line in (logs or "").splitlines()[-LOG_TAIL_LINES:]:
                console.print(f"      {line}", markup=False, soft_wrap=True)


# --- deploy ----------------------------------------------------------------------------------


def check_secrets(core: Any, env: str) -> None:
    """Exit before applying anything when a Secret the pods mount does not exist yet."""
    from desbordante_ops.cluster_secrets import SPECS, read_secret

    namespace = names.namespace_for(env)
    try:
        missing = [s.name for s in SPECS if read_secret(core, s.name, namespace) is None]
    except ApiException as exc:
        raise Exit(f"Cannot read Secrets in {namespace}: {exc.reason}") from None
    if missing:
        raise Exit(
            f"Secrets missing in {namespace}: {', '.join(missing)}; run "
            f"`invoke secrets.generate --env {env}` first."
        )


def deploy_release(
    c: Any,
    cfg: EnvConfig,
    k: kube.Kube,
    tag: str,
    manifests: str,
    yes: bool = False,
    confirm: Confirm = input,
    timeout: float = ROLLOUT_TIMEOUT_SECONDS,
    stage_core: Any = None,
    **wait_kw: Any,
) -> bool:
    """The whole deploy of MANIFESTS (already rendered with TAG); True when anything changed.

    STAGE_CORE reads stage's release record for prod (default: the same cluster as K).
    """
    namespace = names.namespace_for(cfg.name)
    if cfg.name == "prod":
        stage_ns = names.namespace_for("stage")
        check_prod_rules(tag, releases(stage_core or k.core, stage_ns), yes, confirm)
    check_secrets(k.core, cfg.name)
    docs = split_documents(manifests)
    job = migrate_job(docs, tag)
    if job is None:
        warn(f"the manifests have no Job {names.migrate_job_name(tag)}; no migration runs")
    elif job_state(k, namespace, job["metadata"]["name"]) == "failed":
        warn(f"job {job['metadata']['name']} failed before; deleting it to run it again")
        k.batch.delete_namespaced_job(
            job["metadata"]["name"], namespace, propagation_policy="Background"
        )
    with manifest_file(docs) as path:
        step(f"Changes for {namespace} (kubectl diff)")
        changed = kubectl_diff(c, cfg, path)
        if changed:
            step(f"Applying {len(docs)} objects to {namespace}")
            c.run(kube.kubectl(cfg, "apply", "-f", path), pty=False)
        else:
            ok("the cluster already matches the manifests")
    if job is not None:
        name = job["metadata"]["name"]
        step(f"Waiting for the migrate job {name}")
        if wait_migrate(k, namespace, name, timeout, **wait_kw) != "succeeded":
            diagnose(k, namespace, f"job-name={name}")
            raise Exit(f"Migration job {name} did not succeed; see the events and logs above.", 1)
        ok(f"migrations applied ({name})")
    step("Waiting for the rollouts")
    pending = wait_rollouts(k, namespace, timeout, **wait_kw)
    if pending:
        for item in pending:
            fail(f"{item.kind} {item.name}: {item.ready}/{item.desired} {item.problem}".rstrip())
        diagnose(k, namespace)
        raise Exit(f"Rollout in {namespace} did not finish; see the events and logs above.", 1)
    if tag not in releases(k.core, namespace):
        record_release(k.core, namespace, tag, image_ref(cfg, tag))
        changed = True
    ok(f"{image_ref(cfg, tag)} is live in {namespace}" + ("" if changed else " (no changes)"))
    return changed


def env_config(env: str, tag: str | None = None) -> tuple[EnvConfig, str]:
    """Config of a cluster environment and the tag to deploy (default: the working tree's)."""
    if env not in names.KUBE_ENVS:
        raise Exit(
            f"--env {env}: deploys go to a cluster; use one of {', '.join(names.KUBE_ENVS)}."
        )
    return load_config(env), tag or default_tag()


@task(
    default=True,
    help={
        "env": "Cluster environment: stage or prod.",
        "tag": "Image tag to deploy (default: release tag of HEAD, else its short sha).",
        "yes": "Skip the prod confirmation prompt.",
    },
)
def deploy(c: Any, env: str = "stage", tag: str | None = None, yes: bool = False) -> None:
    """Render, diff, apply, migrate and wait for the rollout of one release."""
    cfg, tag = env_config(env, tag)
    if env == "prod" and not imagetags.is_prod_pushable(tag):
        raise Exit(f"prod takes only a release tag vX.Y.Z; {tag!r} is not one (tag a release).")
    manifests = render_manifests(c, env, tag)
    k = kube.connect(cfg)
    stage_core = kube.connect(load_config("stage")).core if env == "prod" else None
    deploy_release(c, cfg, k, tag, manifests, yes=yes, stage_core=stage_core)


@task(
    help={
        "env": "Cluster environment: stage or prod.",
        "tag": "Image tag to render (default: release tag of HEAD, else its short sha).",
    }
)
def render(c: Any, env: str = "stage", tag: str | None = None) -> None:
    """Print the manifests of an environment as they would be applied."""
    _, tag = env_config(env, tag)
    print(render_manifests(c, env, tag), end="")


def teardown_docs(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What teardown deletes: everything rendered except the namespace and volume claims."""
    return [doc for doc in docs if doc.get("kind") not in KEEP_ON_TEARDOWN]


@task(
    help={
        "env": "Cluster environment: stage or prod.",
        "purge_data": "Also delete the namespace with its volumes and Secrets (asks first).",
        "yes": "Do not ask before purging data.",
    }
)
def teardown(c: Any, env: str = "stage", purge_data: bool = False, yes: bool = False) -> None:
    """Remove the workloads of an environment; data stays unless --purge-data is confirmed."""
    cfg, tag = env_config(env)
    namespace = names.namespace_for(env)
    docs = teardown_docs(split_documents(render_manifests(c, env, tag)))
    with manifest_file(docs) as path:
        step(f"Deleting the workloads of {namespace} (volumes and Secrets are kept)")
        c.run(kube.kubectl(cfg, "delete", "--ignore-not-found", "--wait", "-f", path), pty=False)
    if not purge_data:
        ok(f"workloads removed; data in {namespace} kept (--purge-data deletes it)")
        return
    if not yes and input(f"Delete ALL data of {namespace}? Type the namespace: ") != namespace:
        raise Exit("Not confirmed; the data is kept.")
    c.run(kube.kubectl(cfg, "delete", "namespace", namespace, "--ignore-not-found", "--wait"))
    ok(f"namespace {namespace} and all its data deleted")
