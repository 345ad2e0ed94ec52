"""Stage for auto-update cycles: a git remote with real commits, and a cluster made of the
in-memory API fakes of the deploy tests behind a kubectl whose `diff`/`apply` land on them.

`Origin` is a bare git repository (the "GitHub" of the test) with a work clone that commits the
repository's own k8s/ and env/. `Stage` is an
Invoke Context: git and `kubectl kustomize` run for real, `kubectl diff` says "changed", and
`kubectl apply` does what the cluster would: the api and worker Deployments take the applied
image (ready, unless its digest is in BROKEN: then the rollout never finishes), migrate Jobs
complete, and the api pod reports the applied `repo@sha256:...` as its image ID, as the kubelet
does for an image pulled by digest.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from invoke import Context, Result

from desbordante_ops.cluster import kube, names
from desbordante_ops.core.settings import REPO_ROOT
from support.fake_release import SHA_TAG, cluster, running

GIT_ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "CI",
    "GIT_AUTHOR_EMAIL": "ci@example.invalid",
    "GIT_COMMITTER_NAME": "CI",
    "GIT_COMMITTER_EMAIL": "ci@example.invalid",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
}


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


def stage_cluster() -> kube.Kube:
    """Stage (and prod) with namespaces and Secrets; nothing deployed yet; Jobs complete."""
    k = cluster(SHA_TAG, job="missing")
    k.core.pods = []
    k.apps.ready.clear()
    k.batch.on_create = lambda name, body: "Complete"
    return k


class Stage(Context):
    """git and `kubectl kustomize` for real; `kubectl diff/apply` on the fakes of K."""

    # Declared on the class: Invoke's Context would otherwise keep them in its config (copies).
    k: Any = None
    broken: set[str] = set()  # noqa: RUF012 - replaced per instance
    applied: list[str] = []  # noqa: RUF012 - the api image of every apply, in order
    docs: list[dict[str, Any]] = []  # noqa: RUF012 - the documents of the last apply
    during_apply: Callable[[], None] | None = None

    def __init__(self, k: kube.Kube) -> None:
        super().__init__()
        self.k, self.broken, self.applied, self.docs = k, set(), [], []
        self.during_apply = None

    def run(self, command: str, **kw: Any) -> Any:
        words = shlex.split(command)
        if words[0] == "kubectl" and ("diff" in words or "apply" in words):
            return self._kubectl(words)
        return super().run(command, **kw)

    def _kubectl(self, words: list[str]) -> Result:
        with open(words[words.index("-f") + 1], encoding="utf-8") as fh:
            docs = [doc for doc in yaml.safe_load_all(fh) if doc]
        if "diff" in words:
            return Result("~ changed", exited=1)
        if self.during_apply is not None:
            self.during_apply()
        api = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "api")
        image = api["spec"]["template"]["spec"]["containers"][0]["image"]
        self.applied.append(image)
        self.docs = docs
        healthy = image.partition("@")[2] not in self.broken
        self.k.apps.image = image
        self.k.apps.ready.update(dict.fromkeys(names.DEPLOYMENTS, 1 if healthy else 0))
        self.k.apps.ready.update(dict.fromkeys(names.STATEFULSETS, 1))
        # pulled by digest: the kubelet reports that very reference as the image ID
        self.k.core.pods = [running(image, image_id=image)] if healthy else []
        for doc in docs:
            if doc["kind"] == "Job" and doc["metadata"]["name"] not in self.k.batch.states:
                self.k.batch.create_namespaced_job(doc["metadata"]["namespace"], doc)
        return Result("configured")
