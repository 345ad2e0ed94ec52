"""One release on its way to an environment: what every step of deploy, the prod gate and
rollback needs, in one object instead of a dozen loose parameters.

`Release.prepare` checks the tag once (Docker's tag grammar, never `latest`; prod takes
release tags vX.Y.Z only) and renders the manifests; everything after works on the result.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from invoke import Context, Exit
from kubernetes import client as k8s

from desbordante_ops.cluster.kube.client import Kube, connect, connect_or_step
from desbordante_ops.cluster.manifests.render import Rendered, check_docker_tag, render
from desbordante_ops.cluster.release.rollout import Clock, Deadline
from desbordante_ops.core.plan import Step
from desbordante_ops.core.settings import EnvConfig, load_config
from desbordante_ops.image.tags import is_release_tag

ROLLOUT_TIMEOUT_SECONDS = 600
Confirm = Callable[[str], str]


def check_tag(cfg: EnvConfig, tag: str) -> str:
    """TAG when CFG's environment may run it; Exit with why not (the one place tags are
    checked: a valid, release-unique Docker tag; prod only a release tag vX.Y.Z)."""
    check_docker_tag(tag)
    if cfg.name == "prod" and not is_release_tag(tag):
        raise Exit(f"prod takes only a release tag vX.Y.Z; {tag!r} is not one (tag a release).")
    return tag


def check_timeout(timeout: float) -> float:
    """TIMEOUT if it is a usable number of seconds; Exit otherwise."""
    if not timeout > 0:
        raise Exit(f"--timeout {timeout}: give the seconds to wait, a number above 0.")
    return timeout


@dataclass(frozen=True)
class Options:
    """How a release goes out: YES skips prod's confirmation (CONFIRM asks otherwise), TIMEOUT
    bounds every wait together (and the wait for another deploy's lock), REGISTRY_AUTH
    (username, password) creates or updates the image pull Secret; CLOCK for tests."""

    yes: bool = False
    timeout: float = ROLLOUT_TIMEOUT_SECONDS
    registry_auth: dict[str, str] | None = field(default=None, repr=False)
    confirm: Confirm = input
    clock: Clock | None = None

    def __post_init__(self) -> None:
        check_timeout(self.timeout)


@dataclass(frozen=True)
class Release:
    """TAG's manifests (RENDERED) for CFG's environment on the cluster K.

    STAGE_LEDGER reads stage's release record for prod's gate (default: K itself: stage and
    prod share a server).
    """

    c: Context
    cfg: EnvConfig
    k: Kube
    tag: str
    rendered: Rendered
    options: Options = field(default_factory=Options)
    stage_ledger: k8s.CoreV1Api | None = None

    @classmethod
    def prepare(
        cls,
        c: Context,
        cfg: EnvConfig,
        k: Kube,
        tag: str,
        options: Options | None = None,
        image_name: str | None = None,
        digest: str = "",
        stage_ledger: k8s.CoreV1Api | None = None,
    ) -> Release:
        """Check TAG once and render it (pinned to IMAGE_NAME@DIGEST when DIGEST is given)."""
        check_tag(cfg, tag)
        rendered = render(c, cfg, tag, image_name=image_name, digest=digest)
        return cls(c, cfg, k, tag, rendered, options or Options(), stage_ledger)

    @property
    def namespace(self) -> str:
        return self.rendered.namespace

    @property
    def image(self) -> str:
        return self.rendered.image

    @property
    def ledger_core(self) -> k8s.CoreV1Api:
        return self.stage_ledger or self.k.core

    def with_rendered(self, rendered: Rendered) -> Release:
        return replace(self, rendered=rendered)

    def deadline(self) -> Deadline:
        """A fresh time budget of --timeout for the waits of one run."""
        return Deadline.after(self.options.timeout, self.options.clock)


def open_release(
    c: Context, cfg: EnvConfig, tag: str, options: Options
) -> tuple[Release | None, list[Step]]:
    """TAG's release on CFG's cluster (prod also reads stage's ledger), or None and the row
    saying why the cluster cannot be read."""
    check_tag(cfg, tag)
    k, why = connect_or_step(cfg)
    if k is None:
        return None, why
    stage = connect(load_config("stage")).core if cfg.name == "prod" else None
    return Release.prepare(c, cfg, k, tag, options, stage_ledger=stage), []
