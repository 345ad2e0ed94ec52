"""Kubernetes client helpers: kubeconfig, API objects, reads, namespaces, restarts, pod exec.

Everything that talks to a cluster goes through `connect(cfg)`; the API objects it returns are
plain `kubernetes` client classes, so tests can hand the logic in-memory fakes instead.
Outside tools (kubectl) run through the Invoke context with `kubectl(cfg, ...)` lines.
"""

from __future__ import annotations

import datetime as dt
import shlex
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import yaml
from invoke import Exit
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from kubernetes.stream import stream
from urllib3.exceptions import HTTPError
from websocket import WebSocketException

from desbordante_ops.cluster.names import MANAGED_BY
from desbordante_ops.core.settings import EnvConfig

RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
EXEC_TIMEOUT_SECONDS = 60
T = TypeVar("T")


class PodExec(Protocol):
    """Runs ARGV in a container with STDIN on its standard input; returns (exit code, output)."""

    def __call__(self, argv: list[str], stdin: str) -> tuple[int, str]: ...


@dataclass
class Kube:
    """The API objects of one cluster connection."""

    api_client: Any
    core: Any
    apps: Any
    batch: Any
    rbac: Any
    storage: Any = None  # StorageV1Api: the default StorageClass (deploy's prerequisites)
    custom: Any = None  # CustomObjectsApi: API discovery of CRD groups (Traefik's Middleware)
    coordination: Any = None  # CoordinationV1Api: the deploy lock (a Lease, cluster/lock.py)

    @property
    def host(self) -> str:
        return str(self.api_client.configuration.host)


def kubeconfig_path(cfg: EnvConfig) -> Path:
    """The environment's kubeconfig (KUBECONFIG_PATH, derived from $KUBECONFIG by default)."""
    return Path(cfg.toolkit.KUBECONFIG_PATH).expanduser()


def connect(cfg: EnvConfig) -> Kube:
    """Load the kubeconfig and build the API objects; a clear Exit when that is impossible."""
    path = kubeconfig_path(cfg)
    if not path.is_file():
        raise Exit(
            f"No kubeconfig at {path}: run `sudo invoke k3s.install` on the server, or set "
            f"KUBECONFIG_PATH in env/{cfg.name}.env to the kubeconfig of your cluster."
        )
    try:
        api_client = k8s_config.new_client_from_config(config_file=str(path))
    except (ConfigException, OSError, ValueError) as exc:
        raise Exit(f"Cannot use kubeconfig {path}: {exc}") from None
    kube = Kube(
        api_client=api_client,
        core=k8s.CoreV1Api(api_client),
        apps=k8s.AppsV1Api(api_client),
        batch=k8s.BatchV1Api(api_client),
        rbac=k8s.RbacAuthorizationV1Api(api_client),
        storage=k8s.StorageV1Api(api_client),
        custom=k8s.CustomObjectsApi(api_client),
        coordination=k8s.CoordinationV1Api(api_client),
    )
    try:
        k8s.VersionApi(api_client).get_code(_request_timeout=10)
    except ApiException as exc:
        if exc.status == 401:
            raise Exit(
                f"Kubernetes API at {kube.host} refused the credentials of {path} (401): the "
                "token expired or was revoked; ask an admin for a new kubeconfig "
                "(`invoke access.grant`)."
            ) from None
        raise Exit(f"Kubernetes API at {kube.host} answered {exc.status} {exc.reason}.") from None
    except Exception as exc:  # urllib3/SSL/connection errors all mean the same to the user
        raise Exit(
            f"Kubernetes API at {kube.host} (kubeconfig {path}) is not reachable: "
            f"{type(exc).__name__}. Is k3s running (`systemctl status k3s`)?"
        ) from None
    return kube


def kubectl(cfg: EnvConfig, *args: str) -> str:
    """A kubectl command line for the environment's kubeconfig (never carries a secret)."""
    return shlex.join(["kubectl", "--kubeconfig", str(kubeconfig_path(cfg)), *args])


def read_or_none(read: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
    """READ(*ARGS), or None when the API answers 404 (other errors propagate)."""
    try:
        return read(*args, **kwargs)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def if_exists(call: Callable[..., Any], *args: Any, **kwargs: Any) -> bool:
    """CALL(*ARGS) (a delete or patch); False when the object does not exist (404)."""
    try:
        call(*args, **kwargs)
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


def ensure_namespace(core: Any, name: str, labels: dict[str, str]) -> bool:
    """Create namespace NAME with LABELS unless it exists; True when it was created."""
    if read_or_none(core.read_namespace, name) is not None:
        return False
    body = k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name, labels={**labels, **MANAGED_BY}))
    core.create_namespace(body)
    return True


def now_iso() -> str:
    """Current UTC time as RFC 3339, the format Kubernetes uses for timestamps."""
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def restart_workloads(
    apps: Any,
    namespace: str,
    deployments: tuple[str, ...] = (),
    statefulsets: tuple[str, ...] = (),
    at: str | None = None,
) -> list[str]:
    """Roll the pods of the named workloads, as `kubectl rollout restart` does.

    Missing workloads are skipped; returns the names that were restarted.
    """
    stamp = at or now_iso()
    body = {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: stamp}}}}}
    targets = [(apps.patch_namespaced_deployment, n) for n in deployments] + [
        (apps.patch_namespaced_stateful_set, n) for n in statefulsets
    ]
    return [name for patch, name in targets if if_exists(patch, name, namespace, body)]


def first_running_pod(core: Any, namespace: str, label_selector: str) -> str:
    """Name of a Running pod matching LABEL_SELECTOR; Exit when there is none."""
    pods = core.list_namespaced_pod(namespace, label_selector=label_selector).items
    for pod in pods:
        if pod.status and pod.status.phase == "Running":
            return str(pod.metadata.name)
    raise Exit(f"No running pod matches {label_selector} in {namespace}; deploy the stack first.")


class ExecFailed(Exception):
    """A pod exec that gave no trustworthy exit status (transport error, drop or timeout)."""


# What a dropped or refused connection to the API server raises: HTTP errors (ApiException,
# urllib3), the exec websocket (websocket-client) and the socket/TLS layer (OSError, incl.
# SSLEOFError and TimeoutError).
TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (
    ApiException,
    HTTPError,
    WebSocketException,
    OSError,
)
_MAX_DETAIL = 200


def describe_error(exc: BaseException) -> str:
    """One short line for a transport or API error (never a response body)."""
    if isinstance(exc, ApiException):
        reason = " ".join(str(exc.reason or "").split())
        text = f"HTTP {exc.status} {reason}" if exc.status else f"connection failed: {reason}"
    else:
        detail = " ".join(str(exc).split())
        text = f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
    return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 1] + "…"


@contextmanager
def api_errors(action: str) -> Iterator[None]:
    """Turn a transport/API error inside the block into Exit("ACTION failed: <reason>.")."""
    try:
        yield
    except TRANSPORT_ERRORS as exc:
        raise Exit(f"{action} failed: {describe_error(exc)}.") from None


def _exit_code(resp: Any) -> int | None:
    """The exec's exit status, None when the stream ended without one (dropped connection)."""
    try:
        code = resp.returncode
    except (KeyError, TypeError, ValueError, IndexError, yaml.YAMLError):
        return None  # the status channel was empty or garbled
    return None if code is None else int(code)


def pod_exec(kube: Kube, namespace: str, pod: str, container: str | None = None) -> PodExec:
    """A PodExec running commands in POD through the API (stdin over the exec stream).

    Nothing sensitive goes into ARGV: values travel on stdin only. Commands are written so they
    finish after reading what they need (no EOF required), since older exec protocols (v4)
    cannot half-close stdin; with v5 stdin is closed as well. A transport error, a drop or a
    timeout raises ExecFailed (one line): the caller cannot know whether the command ran.
    """

    def run(argv: list[str], stdin: str) -> tuple[int, str]:
        kwargs: dict[str, Any] = {"container": container} if container else {}
        where = f"`{argv[0]}` in pod {namespace}/{pod}"
        try:
            resp = stream(
                kube.core.connect_get_namespaced_pod_exec,
                pod,
                namespace,
                command=argv,
                stdin=True,
                stdout=True,
                stderr=True,
                tty=False,
                _preload_content=False,
                **kwargs,
            )
        except TRANSPORT_ERRORS as exc:
            raise ExecFailed(f"{where} could not start: {describe_error(exc)}") from None
        try:
            resp.write_stdin(stdin)
            resp.close_channel(0)
            resp.run_forever(timeout=EXEC_TIMEOUT_SECONDS)
            output = resp.read_stdout(timeout=1) + resp.read_stderr(timeout=1)
            code = _exit_code(resp)
        except TRANSPORT_ERRORS as exc:
            raise ExecFailed(f"{where}: connection lost ({describe_error(exc)})") from None
        finally:
            with suppress(*TRANSPORT_ERRORS):
                resp.close()
        if code is None:
            raise ExecFailed(
                f"{where} gave no exit status within {EXEC_TIMEOUT_SECONDS} s "
                "(connection dropped or command still running)"
            )
        return code, output

    return run
