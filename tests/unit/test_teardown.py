"""deploy.teardown: deletes what is deployed (by label), asks before purging, never eats stdin.

kubectl is a MockContext (commands are recorded, nothing runs). To check what a generated
`kubectl delete` would remove, `apply_delete` evaluates its kinds and label selector over a
namespace of deployed objects the way the API server does (equality and existence terms), and
lets the garbage collector take the dependents of what it deleted unless the cascade orphans
them.
"""

from __future__ import annotations

import re
import shlex
from typing import Any, cast
from unittest.mock import Mock

import pytest
from invoke import Exit, MockContext, Result
from support.selectors import matches

from desbordante_ops.cluster import names
from desbordante_ops.cluster import teardown as td
from desbordante_ops.cluster.access import DEVOPS_RULES
from desbordante_ops.core.settings import load_config
from desbordante_ops.tasks import deploy as deploy_tasks

NS = "desbordante-stage"
OURS = {
    names.PART_OF_LABEL: names.APP_NAME,
    **names.MANAGED_BY,
    names.INSTANCE_LABEL: NS,
}
# kubectl resource name -> the kind it lists
RESOURCES = {
    "deployments.apps": "Deployment",
    "statefulsets.apps": "StatefulSet",
    "cronjobs.batch": "CronJob",
    "jobs.batch": "Job",
    "ingresses.networking.k8s.io": "Ingress",
    "services": "Service",
    "poddisruptionbudgets.policy": "PodDisruptionBudget",
    "networkpolicies.networking.k8s.io": "NetworkPolicy",
    "configmaps": "ConfigMap",
    "middlewares.traefik.io": "Middleware",
    "persistentvolumeclaims": "PersistentVolumeClaim",
    "secrets": "Secret",
}


JOB = "migrate-v0-1-0-1a2b3c4d"  # deployed by an OLD release; HEAD renders another tag/hash
# (kind/name, labels, owner kind/name): the namespace after that deploy
Deployed = list[tuple[str, dict[str, str], str | None]]


def deployed() -> Deployed:
    toolkit = {names.PART_OF_LABEL: names.APP_NAME, **names.MANAGED_BY}  # no instance label
    return [
        ("Deployment/api", OURS, None),
        ("Pod/api-7d9c-abcde", OURS, "Deployment/api"),  # via its ReplicaSet
        ("Deployment/worker", OURS, None),
        ("StatefulSet/postgres", OURS, None),
        ("Pod/postgres-0", OURS, "StatefulSet/postgres"),
        (f"Job/{JOB}", OURS, None),
        (f"Pod/{JOB}-x7k2p", {**OURS, "job-name": JOB}, f"Job/{JOB}"),
        ("Service/api", OURS, None),
        ("Ingress/api", OURS, None),
        ("PodDisruptionBudget/api", OURS, None),
        ("NetworkPolicy/default-deny", OURS, None),
        ("ConfigMap/desbordante-config-5g7h8k", OURS, None),
        ("Middleware/flower-auth", OURS, None),
        ("PersistentVolumeClaim/uploads", OURS, None),
        ("PersistentVolumeClaim/data-postgres-0", {names.NAME_LABEL: names.APP_NAME}, None),
        (f"Secret/{names.PostgresSecret.NAME}", toolkit, None),
        ("ConfigMap/kube-root-ca.crt", {}, None),
        ("Deployment/someone-elses", {"app": "other"}, None),
    ]


def apply_delete(command: str, objects: Deployed) -> set[str]:
    """KIND/NAME of OBJECTS that the `kubectl delete` COMMAND removes, dependents included."""
    argv = shlex.split(command)
    assert argv[3] == "delete" and "-f" not in argv and "--all" not in argv
    assert argv[argv.index("--namespace") + 1] == NS
    kinds = {RESOURCES[resource] for resource in argv[4].split(",")}
    selector = argv[argv.index("--selector") + 1]
    gone = {
        ref
        for ref, labels, _ in objects
        if ref.split("/")[0] in kinds and matches(selector, labels)
    }
    if "--cascade=orphan" not in argv:
        gone |= {ref for ref, _, owner in objects if owner in gone}
    return gone


def kubectl_context(**results: Result) -> MockContext:
    return MockContext(
        run={
            re.compile(r"^kubectl .* delete (?!namespace)\S+ .*"): results.get("delete", Result()),
            re.compile(r"^kubectl .* delete namespace .*"): results.get("namespace", Result()),
        },
        repeat=True,
    )


def run_calls(c: MockContext) -> list[Any]:
    """The recorded c.run calls (MockContext wraps run in a unittest.mock.Mock)."""
    return list(cast(Mock, c.run).call_args_list)


def commands(c: MockContext) -> list[str]:
    return [call.args[0] for call in run_calls(c)]


@pytest.fixture
def cfg() -> Any:
    return load_config("stage", environ={})


def never_ask(prompt: str) -> str:
    raise AssertionError("asked without a purge / with --yes")


def test_teardown_deletes_the_deployed_release_by_label_and_keeps_data(cfg: Any) -> None:
    c = kubectl_context()
    td.teardown(c, cfg, purge_data=False, yes=False, ask=never_ask)
    cmds = commands(c)
    assert len(cmds) == 2  # built-in kinds, then the Traefik CRD kinds
    assert all("--kubeconfig" in cmd for cmd in cmds)
    gone = set().union(*(apply_delete(cmd, deployed()) for cmd in cmds))
    assert f"Job/{JOB}" in gone and f"Pod/{JOB}-x7k2p" in gone  # whatever tag HEAD renders
    assert {"Deployment/api", "StatefulSet/postgres", "Middleware/flower-auth"} <= gone
    assert {"ConfigMap/desbordante-config-5g7h8k", "NetworkPolicy/default-deny"} <= gone
    kept = {ref for ref, _, _ in deployed()} - gone
    assert kept == {
        "PersistentVolumeClaim/uploads",
        "PersistentVolumeClaim/data-postgres-0",
        f"Secret/{names.PostgresSecret.NAME}",
        "ConfigMap/kube-root-ca.crt",
        "Deployment/someone-elses",
    }
    assert all("--cascade=foreground" in cmd and " --wait" in cmd for cmd in cmds)
    assert not any(" delete namespace " in cmd for cmd in cmds)


def test_a_devops_kubeconfig_may_delete_every_kind_teardown_deletes() -> None:
    allowed = {
        f"{resource}.{group}" if group else resource
        for group, resources, verbs in DEVOPS_RULES
        if "delete" in verbs and "list" in verbs
        for resource in resources
    }
    assert set(td.WORKLOAD_KINDS + td.CRD_KINDS) <= allowed


def test_every_kubectl_call_is_cut_off_from_our_stdin(cfg: Any) -> None:
    c = kubectl_context()
    td.teardown(c, cfg, purge_data=True, yes=True)
    calls = run_calls(c)
    assert len(calls) == 3
    assert all(call.kwargs.get("in_stream") is False for call in calls)


def test_teardown_task_needs_no_render_and_no_git(monkeypatch: pytest.MonkeyPatch) -> None:
    c = kubectl_context()  # any other command (git, kubectl kustomize) would fail the MockContext
    deploy_tasks.teardown(c, env="stage")
    assert [shlex.split(cmd)[3] for cmd in commands(c)] == ["delete", "delete"]


@pytest.mark.parametrize("answer", ["", "yes", "desbordante-prod", "y"])
def test_wrong_answer_deletes_nothing(cfg: Any, answer: str) -> None:
    c = kubectl_context()
    with pytest.raises(Exit, match=r"Not confirmed .* nothing was deleted"):
        td.teardown(
            c, cfg, purge_data=True, yes=False, ask=lambda p: answer, interactive=lambda: True
        )
    assert commands(c) == []


def test_no_terminal_refuses_before_deleting_anything(cfg: Any) -> None:
    c = kubectl_context()
    with pytest.raises(Exit) as info:
        td.teardown(c, cfg, purge_data=True, yes=False, ask=never_ask, interactive=lambda: False)
    message = str(info.value.message)
    assert "pass --yes" in message and "\n" not in message
    assert commands(c) == []


def test_eof_at_the_prompt_refuses_before_deleting_anything(cfg: Any) -> None:
    def eof(prompt: str) -> str:
        raise EOFError

    c = kubectl_context()
    with pytest.raises(Exit, match="pass --yes"):
        td.teardown(c, cfg, purge_data=True, yes=False, ask=eof, interactive=lambda: True)
    assert commands(c) == []


def test_purge_asks_first_then_workloads_then_namespace(cfg: Any) -> None:
    events: list[str] = []

    class Recording(MockContext):
        def run(self, command: str, **kw: Any) -> Any:
            events.append(shlex.split(command)[4])
            return Result()

    def ask(prompt: str) -> str:
        events.append("asked")
        assert NS in prompt
        return f"  {NS}\n"

    td.teardown(Recording(), cfg, purge_data=True, yes=False, ask=ask, interactive=lambda: True)
    assert events == ["asked", ",".join(td.WORKLOAD_KINDS), *td.CRD_KINDS, "namespace"]


def test_purge_with_yes_needs_no_terminal(cfg: Any) -> None:
    c = kubectl_context()
    td.teardown(c, cfg, purge_data=True, yes=True, ask=never_ask, interactive=lambda: False)
    assert commands(c)[-1].endswith(f"delete namespace {NS} --ignore-not-found --wait")


def test_failed_delete_is_one_line_and_stops_before_the_namespace(cfg: Any) -> None:
    c = kubectl_context(delete=Result(exited=1, stderr="error: You must be logged in"))
    with pytest.raises(Exit, match=f"Deleting the objects of {NS} failed \\(exit 1\\)"):
        td.teardown(c, cfg, purge_data=True, yes=True)
    assert len(commands(c)) == 1


def crd_delete_fails(stderr: str) -> MockContext:
    return MockContext(
        run={
            re.compile(r".* delete middlewares\.traefik\.io .*"): Result(exited=1, stderr=stderr),
            re.compile(r".* delete \S+ .*"): Result(),
        },
        repeat=True,
    )


def test_missing_traefik_crds_mean_no_middlewares_to_delete(cfg: Any) -> None:
    missing = 'error: the server doesn\'t have a resource type "middlewares"'
    td.teardown(crd_delete_fails(missing), cfg, purge_data=False, yes=False)
    forbidden = 'Error from server (Forbidden): middlewares.traefik.io is forbidden: User "x"'
    with pytest.raises(Exit, match=r"middlewares\.traefik\.io of desbordante-stage failed: Error"):
        td.teardown(crd_delete_fails(forbidden), cfg, purge_data=False, yes=False)
