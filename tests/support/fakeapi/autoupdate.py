"""Stage for auto-update cycles on the one fake: a git remote with real commits, and the fake
API server whose simulated kubelet knows which images are broken.

`Origin` is a bare git repository (the "GitHub" of the test) with a work clone that commits
this repository's own k8s/ and env/. `stage_cluster()` is a k3s-like fake API server with
stage and prod prepared (namespaces and Secrets, as `invoke secrets.generate` makes them)
whose `ImageKubelet` starts the pods of a Deployment that runs an image of `broken` (by
digest) but never lets them become ready, as a release whose pods never pass their readiness
probe; everything else behaves as `fakeapi/kubelet.py` says (Jobs succeed unless told
otherwise with `behave`, pulled-by-digest images report that very reference as their image
ID). `Rollouts` records the api image of every rollout of a namespace (each new generation of
its api Deployment), what a cycle deployed and in which order.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from support.fakeapi.connect import kube_for
from support.fakeapi.k3s import Cluster, prepare, seed_k3s
from support.fakeapi.kinds import Kind
from support.fakeapi.kubelet import Behaviour, Kubelet
from support.fakeapi.server import FakeApiServer

from desbordante_ops.cluster.kube import names
from desbordante_ops.core.settings import REPO_ROOT

GIT_ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "CI",
    "GIT_AUTHOR_EMAIL": "ci@example.invalid",
    "GIT_COMMITTER_NAME": "CI",
    "GIT_COMMITTER_EMAIL": "ci@example.invalid",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
}
# A Deployment of a broken image: its pods run but never pass their readiness probe.
NEVER_READY = Behaviour(ready=False)


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(cwd), *args],
        env=GIT_ENV,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return done.stdout.strip()


class Origin:
    """A bare repository with branch main and a work clone that pushes to it."""

    def __init__(self, root: Path) -> None:
        self.bare, self.work = root / "origin.git", root / "work"
        subprocess.run(
            ["git", "init", "--quiet", "--bare", "-b", "main", str(self.bare)],
            env=GIT_ENV,
            check=True,
            timeout=60,
        )
        subprocess.run(
            ["git", "clone", "--quiet", str(self.bare), str(self.work)],
            env=GIT_ENV,
            check=True,
            timeout=60,
            capture_output=True,
        )
        git(self.work, "checkout", "--quiet", "-b", "main")
        for part in ("k8s", "env"):
            shutil.copytree(REPO_ROOT / part, self.work / part)

    def commit(self, message: str, files: dict[str, str] | None = None) -> str:
        """Commit FILES (path -> text) on main and push; the new commit id."""
        for path, text in (files or {}).items():
            (self.work / path).write_text(text, encoding="utf-8")
        git(self.work, "add", "-A")
        git(self.work, "commit", "--quiet", "--allow-empty", "-m", message)
        git(self.work, "push", "--quiet", "origin", "main")
        return git(self.work, "rev-parse", "HEAD")

    def tag(self, name: str) -> None:
        """An annotated release tag at main's head, pushed."""
        git(self.work, "tag", "-a", name, "-m", name)
        git(self.work, "push", "--quiet", "origin", name)

    def head(self) -> str:
        return git(self.work, "rev-parse", "HEAD")


def _containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    spec = ((obj.get("spec") or {}).get("template") or {}).get("spec") or {}
    return list(spec.get("containers") or [])


@dataclass
class ImageKubelet(Kubelet):
    """The simulated controllers, plus: a Deployment running an image whose digest is in
    BROKEN gets pods that never become ready (whatever `behave` says of its component)."""

    broken: set[str] = field(default_factory=set)  # sha256:... digests
    _deploying: set[str] = field(default_factory=set, repr=False)

    def _written(self, server: FakeApiServer, kind: Kind, obj: dict[str, Any]) -> None:
        # Writes nest (a Deployment's ReplicaSet is written while it is handled): only a
        # Deployment sets the digests, and each write puts back what it found.
        outer = self._deploying
        if kind.kind == "Deployment":
            self._deploying = {c.get("image", "").partition("@")[2] for c in _containers(obj)}
        try:
            super()._written(server, kind, obj)
        finally:
            self._deploying = outer

    def behaviour(self, component: str, job: str = "") -> Behaviour:
        if not job and self._deploying & self.broken:
            return NEVER_READY
        return super().behaviour(component, job)


@dataclass
class Stage(Cluster):
    """The fake cluster of an auto-update test (its kubelet knows broken images)."""

    kubelet: ImageKubelet


def stage_cluster() -> Stage:
    """A fresh k3s-like fake with stage and prod prepared; nothing deployed yet."""
    server = FakeApiServer()
    seed_k3s(server)
    kubelet = ImageKubelet(server)
    stage = Stage(server, kubelet, kube_for(server))
    for env in ("stage", "prod"):
        prepare(stage.admin, env)
    return stage


def api_image(server: FakeApiServer, namespace: str = "desbordante-stage") -> str:
    """The image of the api container of NAMESPACE's api Deployment ("" when none)."""
    found = server.get("Deployment", names.API, namespace)
    if found is None:
        return ""
    return next(
        (str(c["image"]) for c in _containers(found) if c.get("name") == names.API),
        "",
    )


@dataclass
class Rollouts:
    """The api image of every rollout in NAMESPACE: each new generation of its api
    Deployment (an apply that changes nothing is no rollout), in order."""

    server: FakeApiServer
    namespace: str = "desbordante-stage"
    images: list[str] = field(default_factory=list)
    _generation: int = 0

    def __post_init__(self) -> None:
        self.server.after_write.append(self._written)

    def _written(self, server: FakeApiServer, kind: Kind, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        if (kind.kind, meta["name"], meta.get("namespace")) != (
            "Deployment",
            names.API,
            self.namespace,
        ):
            return
        generation = int(meta.get("generation") or 0)
        if generation != self._generation:
            self._generation = generation
            self.images.append(api_image(server, self.namespace))
