"""The toolkit's `kubectl` commands, recorded and applied to the one fake API server.

The fake API server does not serve kubectl (no OpenAPI, no pods/exec), so code that runs
kubectl through the Invoke context (backup/restore of a cluster) gets `KubectlContext`, a
MockContext. It records every command and asks the fake, through the typed `Kube` of the
kubeconfig's user (RBAC applies), what kubectl would have asked for; the simulated kubelet
reacts as it does to any write. It is not a Kubernetes fake of its own: it keeps no state but
the commands and forwards the rest to the one fake.

- `patch deployment/NAME --type=merge -p JSON`: that merge patch (field manager kubectl-patch);
- `apply -f FILE`: each object of FILE created, as kubectl's client-side apply creates a new
  one (with its last-applied annotation); only Jobs, and only new ones, are modeled;
- `delete job NAME [--ignore-not-found] ...`: the Job deleted (its pods go with it);
- `exec [-i] POD -c CONTAINER -- ...`: the pod read, and `create pods/exec` asked of RBAC
  (SelfSubjectAccessReview); a pod that does not exist, does not run or has no such container
  fails as kubectl does. What runs inside is not modeled: RESULTS answer it.
The shell around a command: `< FILE` fails when FILE does not exist; `> FILE` is created (with
the first of OUTPUTS whose regex matches the command, when the command succeeds).
RESULTS (regex -> Result, first match) script answers; a scripted failure runs nothing and so
changes nothing. An API refusal is a failed command with kubectl's `Error from server
(Reason): message`. Anything but kubectl is an AssertionError.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from invoke import MockContext, Result
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from desbordante_ops.cluster.kube.client import Kube

LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
NOT_FOUND = 404


def kubectl_error(exc: ApiException) -> str:
    """kubectl's line for an API error: `Error from server (NotFound): <message>`."""
    try:
        body = json.loads(exc.body or "{}")
    except ValueError:
        body = {}
    return f"Error from server ({body.get('reason') or exc.reason}): {body.get('message', '')}"


def _split(words: list[str], mark: str) -> tuple[list[str], list[str], list[str]]:
    """(before, [MARK] or [], after) at the first MARK in WORDS."""
    if mark not in words:
        return words, [], []
    at = words.index(mark)
    return words[:at], [mark], words[at + 1 :]


class KubectlContext(MockContext):
    """Records every command and applies the kubectl ones to the fake through K (see the
    module docstring). BEFORE(command) is called before each command runs (a test looks at
    the cluster at that moment)."""

    _k: Kube
    _results: dict[str, Result]
    _outputs: dict[str, bytes]
    _before: Callable[[str], None] | None
    _commands: list[str]
    _applied: list[dict[str, Any]]

    def __init__(
        self,
        k: Kube,
        results: dict[str, Result] | None = None,
        outputs: dict[str, bytes] | None = None,
        before: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__()
        # object.__setattr__: Invoke's Context keeps attributes it does not know in its config.
        own = {"_k": k, "_results": results or {}, "_outputs": outputs or {}, "_before": before}
        for name, value in {**own, "_commands": [], "_applied": []}.items():
            object.__setattr__(self, name, value)

    @property
    def commands(self) -> list[str]:
        """Every command run so far, in order."""
        return self._commands

    @property
    def applied(self) -> list[dict[str, Any]]:
        """Every object `kubectl apply -f` created, as the file had it."""
        return self._applied

    def run(self, command: str, **kwargs: Any) -> Result:
        self._commands.append(command)
        if self._before is not None:
            self._before(command)
        words = shlex.split(command)
        redirects: dict[str, str] = {}
        while len(words) > 2 and words[-2] in ("<", ">"):
            redirects[words[-2]] = words[-1]
            words = words[:-2]
        source = redirects.get("<")
        if source is not None and not Path(source).exists():
            return Result(
                command=command, stderr=f"bash: {source}: No such file or directory\n", exited=1
            )
        scripted = next(
            (result for pattern, result in self._results.items() if re.search(pattern, command)),
            None,
        )
        if scripted is not None and not scripted.ok:
            result = scripted  # the command failed: nothing it would change changed
        else:
            result = self._kubectl(command, words)
            if result.ok and scripted is not None:
                result = scripted
        target = redirects.get(">")
        if target is not None:
            data = b""
            if result.ok:
                data = next((v for p, v in self._outputs.items() if re.search(p, command)), b"")
            Path(target).write_bytes(data)
        return result

    # --- kubectl ------------------------------------------------------------------------

    def _kubectl(self, command: str, words: list[str]) -> Result:
        assert words and words[0] == "kubectl", f"not a kubectl command: {command}"
        head, dashes, inside = _split(words[1:], "--")  # INSIDE: run in the container
        namespace, args = "default", []
        rest = iter(head)
        for word in rest:
            if word in ("-n", "--namespace"):
                namespace = next(rest)
            elif word == "--kubeconfig":
                next(rest)  # the connection is K, the kubeconfig's user
            else:
                args.append(word)
        verb, *args = [*args, *dashes, *inside]
        try:
            if verb == "patch":
                return self._patch(command, namespace, args)
            if verb == "apply":
                return self._apply(command, namespace, args)
            if verb == "delete":
                return self._delete(command, namespace, args)
            if verb == "exec":
                return self._exec(command, namespace, args)
        except ApiException as exc:
            return Result(command=command, stderr=kubectl_error(exc) + "\n", exited=1)
        raise AssertionError(f"kubectl {verb} is not modeled: {command}")

    def _patch(self, command: str, namespace: str, args: list[str]) -> Result:
        kind, _, name = args[0].partition("/")
        assert kind == "deployment" and "--type=merge" in args, f"not modeled: {command}"
        body = json.loads(args[args.index("-p") + 1])
        self._k.apps.patch_namespaced_deployment(
            name,
            namespace,
            body,
            field_manager="kubectl-patch",
            _content_type="application/merge-patch+json",
        )
        return Result(command=command, stdout=f"deployment.apps/{name} patched\n")

    def _apply(self, command: str, namespace: str, args: list[str]) -> Result:
        path = Path(args[args.index("-f") + 1])
        docs = [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]
        said = []
        for doc in docs:
            assert doc.get("kind") == "Job", f"kubectl apply of a {doc.get('kind')}: not modeled"
            name = doc["metadata"]["name"]
            where = doc["metadata"].get("namespace") or namespace
            try:
                self._k.batch.read_namespaced_job(name, where)
            except ApiException as exc:
                if exc.status != NOT_FOUND:
                    raise
            else:
                raise AssertionError(f"kubectl apply of an existing Job {name}: not modeled")
            body = json.loads(json.dumps(doc))
            annotations = body["metadata"].setdefault("annotations", {})
            annotations[LAST_APPLIED] = json.dumps(doc, sort_keys=True)
            self._k.batch.create_namespaced_job(
                where, body, field_manager="kubectl-client-side-apply"
            )
            self._applied.append(doc)
            said.append(f"job.batch/{name} created\n")
        return Result(command=command, stdout="".join(said))

    def _delete(self, command: str, namespace: str, args: list[str]) -> Result:
        kind, name = args[0], args[1]
        assert kind == "job", f"not modeled: {command}"
        cascade = next((a.split("=", 1)[1] for a in args if a.startswith("--cascade=")), "")
        policy = {"background": "Background", "foreground": "Foreground", "orphan": "Orphan"}
        try:
            self._k.batch.delete_namespaced_job(
                name, namespace, propagation_policy=policy.get(cascade, "Background")
            )
        except ApiException as exc:
            if exc.status == NOT_FOUND and "--ignore-not-found" in args:
                return Result(command=command)
            raise
        return Result(command=command, stdout=f'job.batch "{name}" deleted\n')

    def _exec(self, command: str, namespace: str, args: list[str]) -> Result:
        options, _, _ = _split(args, "--")
        at = options.index("-c")
        container = options[at + 1]
        (pod_name,) = [w for w in options[:at] + options[at + 2 :] if not w.startswith("-")]
        pod = self._k.core.read_namespaced_pod(pod_name, namespace)
        review = k8s.V1SelfSubjectAccessReview(
            spec=k8s.V1SelfSubjectAccessReviewSpec(
                resource_attributes=k8s.V1ResourceAttributes(
                    verb="create",
                    resource="pods",
                    subresource="exec",
                    name=pod_name,
                    namespace=namespace,
                )
            )
        )
        answer = self._k.authorization.create_self_subject_access_review(review)
        if not answer.status.allowed:
            return Result(
                command=command,
                stderr=f'Error from server (Forbidden): pods "{pod_name}" is forbidden: '
                'cannot create resource "pods/exec"\n',
                exited=1,
            )
        phase = pod.status.phase if pod.status else "Pending"
        if phase in ("Succeeded", "Failed"):
            return Result(
                command=command,
                stderr="error: cannot exec into a container in a completed pod; current phase "
                f"is {phase}\n",
                exited=1,
            )
        if container not in [c.name for c in pod.spec.containers]:
            return Result(
                command=command,
                stderr=f"Error from server (BadRequest): container {container} is not valid "
                f"for pod {pod_name}\n",
                exited=1,
            )
        if phase != "Running":
            return Result(
                command=command,
                stderr="error: unable to upgrade connection: container not found "
                f'("{container}")\n',
                exited=1,
            )
        return Result(command=command)
