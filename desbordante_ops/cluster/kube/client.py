"""The connection to one cluster: the kubeconfig, the typed API objects, kubectl lines.

Everything that talks to a cluster goes through `connect(cfg)` (or `Kube.of` for a client
built elsewhere, e.g. by tests against the fake API server). The fields are the kubernetes
client's own API classes; `objects` is the generic client over plain manifests
(kube/resources.py) used for server-side apply, prune and teardown.
Outside tools (kubectl) run through the Invoke context with `kubectl(cfg, ...)` lines.
"""

from __future__ import annotations

import logging
import shlex
from dataclasses import dataclass
from pathlib import Path

from invoke import Exit
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from desbordante_ops.cluster.kube.resources import Objects
from desbordante_ops.core.plan import Step, read_or_step
from desbordante_ops.core.settings import EnvConfig

VERSION_TIMEOUT_SECONDS = 10
# The client logs every response body at DEBUG (Secrets included, base64 only): never that.
logging.getLogger("kubernetes.client.rest").setLevel(logging.INFO)


@dataclass(frozen=True)
class Kube:
    """The API objects of one cluster connection."""

    api_client: k8s.ApiClient
    core: k8s.CoreV1Api
    apps: k8s.AppsV1Api
    batch: k8s.BatchV1Api
    rbac: k8s.RbacAuthorizationV1Api
    storage: k8s.StorageV1Api
    custom: k8s.CustomObjectsApi
    coordination: k8s.CoordinationV1Api
    networking: k8s.NetworkingV1Api
    authorization: k8s.AuthorizationV1Api
    version: k8s.VersionApi
    apis: k8s.ApisApi
    objects: Objects

    @classmethod
    def of(cls, api_client: k8s.ApiClient) -> Kube:
        """The API objects over API_CLIENT."""
        return cls(
            api_client=api_client,
            core=k8s.CoreV1Api(api_client),
            apps=k8s.AppsV1Api(api_client),
            batch=k8s.BatchV1Api(api_client),
            rbac=k8s.RbacAuthorizationV1Api(api_client),
            storage=k8s.StorageV1Api(api_client),
            custom=k8s.CustomObjectsApi(api_client),
            coordination=k8s.CoordinationV1Api(api_client),
            networking=k8s.NetworkingV1Api(api_client),
            authorization=k8s.AuthorizationV1Api(api_client),
            version=k8s.VersionApi(api_client),
            apis=k8s.ApisApi(api_client),
            objects=Objects(api_client),
        )

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
    kube = Kube.of(api_client)
    try:
        kube.version.get_code(_request_timeout=VERSION_TIMEOUT_SECONDS)
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


def connect_or_step(cfg: EnvConfig) -> tuple[Kube | None, list[Step]]:
    """The connection, or None and the plan row saying why there is none (core/plan.py)."""
    return read_or_step(lambda: connect(cfg), f"the cluster of {cfg.name}")
