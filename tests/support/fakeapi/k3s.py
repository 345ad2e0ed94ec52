"""A fake API server set up like a fresh single-node k3s, and the stack's environments on it.

`k3s_server()`: what k3s itself creates (kube-system with its Traefik, the node, the default
StorageClass `local-path`, Traefik's CRDs served) plus the simulated controllers
(fakeapi/kubelet.py). `prepare(k, env)`: the namespace and the stack's Secrets of an
environment, as `invoke secrets.generate` makes them (through the toolkit's own code).
`rendered(env, tag, **settings)`: the real manifests (`kubectl kustomize`), rendered once per
arguments and copied for each use.
"""

from __future__ import annotations

import copy
import functools
import tempfile
from dataclasses import dataclass
from pathlib import Path

from invoke import Context
from support.fakeapi.connect import kube_for, token_of
from support.fakeapi.kubelet import Kubelet
from support.fakeapi.server import FakeApiServer

from desbordante_ops.cluster.access import grant_plan
from desbordante_ops.cluster.kube.client import Kube
from desbordante_ops.cluster.manifests.render import Rendered, render
from desbordante_ops.cluster.secrets.generate import ensure_secrets
from desbordante_ops.core.plan import execute
from desbordante_ops.core.settings import EnvConfig, load_config

NODE_MEMORY = "4Gi"


def seed_k3s(server: FakeApiServer) -> None:
    """What a fresh k3s has: kube-system, its node, local-path (default), Traefik running."""
    server.seed({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kube-system"}})
    server.seed(
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": "node-1"},
            "status": {
                "allocatable": {"memory": NODE_MEMORY, "cpu": "2"},
                "capacity": {"memory": NODE_MEMORY, "cpu": "2", "ephemeral-storage": "40Gi"},
                "conditions": [{"type": "Ready", "status": "True"}],
            },
        }
    )
    server.seed(
        {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {
                "name": "local-path",
                "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
            },
            "provisioner": "rancher.io/local-path",
        }
    )
    server.seed(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "traefik", "namespace": "kube-system"},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "traefik"}},
                "template": {
                    "metadata": {"labels": {"app": "traefik"}},
                    "spec": {
                        "containers": [
                            {"name": "traefik", "image": "rancher/mirrored-library-traefik:3.3.6"}
                        ]
                    },
                },
            },
            "status": {"replicas": 1, "readyReplicas": 1, "availableReplicas": 1},
        }
    )


def k3s_server() -> tuple[FakeApiServer, Kubelet]:
    """A fresh k3s-like fake API server and its simulated controllers."""
    server = FakeApiServer()
    seed_k3s(server)
    return server, Kubelet(server)


def config(env: str = "stage", **settings: str) -> EnvConfig:
    """ENV's settings as its env file has them, SETTINGS overriding (nothing from os.environ)."""
    return load_config(env, flags=settings, environ={})


def prepare(k: Kube, env: str = "stage") -> EnvConfig:
    """ENV's namespace and Secrets on the cluster K (what `invoke secrets.generate` makes)."""
    cfg = config(env)
    ensure_secrets(cfg, k)
    return cfg


@functools.cache
def _rendered(env: str, tag: str, settings: tuple[tuple[str, str], ...]) -> Rendered:
    return render(Context(), config(env, **dict(settings)), tag)


def rendered(env: str, tag: str, **settings: str) -> Rendered:
    """The real manifests of TAG for ENV (rendered once per arguments; a copy each time)."""
    return copy.deepcopy(_rendered(env, tag, tuple(sorted(settings.items()))))


@dataclass
class Cluster:
    """A k3s-like fake API server with its simulated controllers and the admin's connection."""

    server: FakeApiServer
    kubelet: Kubelet
    admin: Kube

    def grant(self, role: str, env: str = "stage", user: str = "jane") -> Kube:
        """A connection with the token `access.grant` gives USER as ROLE in ENV."""
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "granted.kubeconfig"
            execute(grant_plan(self.admin, f"desbordante-{env}", user, role, out, days=1))
            return kube_for(self.server, token=token_of(out))


def cluster() -> Cluster:
    """A fresh k3s-like cluster (nothing of ours deployed yet)."""
    server, kubelet = k3s_server()
    return Cluster(server, kubelet, kube_for(server))
