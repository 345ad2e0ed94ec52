"""`doctor --env stage|prod`: the cluster an environment runs on, read through the API.

Rows: the API server and its version against k3s.lock, our namespace and its Pod Security
labels, Traefik and its CRDs, a default StorageClass, memory and disk for both environments'
rendered requests, the Secrets (names only), clock skew, then the edge (TLS mode, certificates).
A row this kubeconfig may not read (a devops or viewer credential: nodes, StorageClasses and
kube-system are cluster-wide) is one short row saying so, what it needs and whom to ask; it is
not a failure. This host's own tools: cluster/host/tools.py.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import re
from collections.abc import Callable
from typing import Any

from invoke import Context, Exit
from kubernetes.client.exceptions import ApiException
from kubernetes.utils import parse_quantity

from desbordante_ops.cluster import certificates
from desbordante_ops.cluster.host.k3s import load_lock
from desbordante_ops.cluster.host.tools import program_present
from desbordante_ops.cluster.kube.client import Kube, connect
from desbordante_ops.cluster.kube.errors import FORBIDDEN, describe_error
from desbordante_ops.cluster.kube.names import (
    INGRESS_CONTROLLER_NAMESPACE,
    NAMESPACE_LABELS,
    SECRETS,
)
from desbordante_ops.cluster.kube.objects import read_or_none
from desbordante_ops.cluster.manifests.render import Rendered, render
from desbordante_ops.core.checks import Check, Result
from desbordante_ops.core.settings import CLUSTER_ENVS, EnvConfig, load_config

# --- `doctor --env stage|prod`: the cluster an environment runs on ---------------------------

MAX_CLOCK_SKEW_SECONDS = 10
API_TIMEOUT_SECONDS = 10
TRAEFIK_GROUP = "traefik.io"
TRAEFIK_DEPLOYMENT = "traefik"
DEFAULT_CLASS_ANNOTATIONS = (
    "storageclass.kubernetes.io/is-default-class",
    "storageclass.beta.kubernetes.io/is-default-class",
)
# Placeholder tag for rendering: the requests do not depend on the image.
RENDER_TAG = "doctor"
GIB = 1024**3


# "... cannot list resource "nodes" in API group "" at the cluster scope" (kube-apiserver's 403)
DENIED = re.compile(
    r'cannot (?P<verb>\w+) resource "(?P<resource>[^"]+)" in API group "(?P<group>[^"]*)"'
    r'(?: in the namespace "(?P<namespace>[^"]+)")?'
)


def not_checked(exc: ApiException, env: str) -> Result:
    """The row of a check this kubeconfig may not read: what it needs and whom to ask."""
    try:
        message = str(json.loads(exc.body or "{}").get("message") or "")
    except (ValueError, TypeError, AttributeError):
        message = ""
    found = DENIED.search(message)
    if found:
        resource = f"{found['resource']}.{found['group']}" if found["group"] else found["resource"]
        where = f" in {found['namespace']}" if found["namespace"] else " (cluster-wide)"
        needs = f"needs {found['verb']} {resource}{where}"
    else:
        needs = "needs rights this kubeconfig does not have"
    return Result(
        False,
        f"not checked: {needs}; a cluster admin runs `invoke doctor --env {env}` with the "
        "admin kubeconfig",
        unchecked=True,
    )


def pod_memory(spec: dict[str, Any]) -> int:
    """Memory a pod spec (a rendered manifest) requests: containers, or its largest init."""

    def request(container: dict[str, Any]) -> int:
        value = container.get("resources", {}).get("requests", {}).get("memory", 0)
        return int(parse_quantity(value))

    containers = sum(request(container) for container in spec.get("containers", []))
    inits = [request(container) for container in spec.get("initContainers", [])]
    return max([containers, *inits])


def claim_storage(claim: dict[str, Any]) -> int:
    return int(parse_quantity(claim["spec"]["resources"]["requests"]["storage"]))


def rendered_needs(rendered: Rendered) -> tuple[int, int]:
    """(memory, storage) in bytes that RENDERED requests at its peak: the long-running
    workloads and claims, plus the larger of deploy's migrate and verify Jobs (they run one
    after the other during a deploy: a transient peak, counted once).
    """
    memory = storage = 0
    for doc in rendered.of_kind("Deployment") + rendered.of_kind("StatefulSet"):
        replicas = doc["spec"].get("replicas", 1)
        memory += replicas * pod_memory(doc["spec"]["template"]["spec"])
        for claim in doc["spec"].get("volumeClaimTemplates", []):
            storage += replicas * claim_storage(claim)
    names_ = [name for name in (rendered.migrate_job, rendered.verify_job) if name]
    jobs = [rendered.find("Job", name) for name in names_]
    memory += max((pod_memory(job["spec"]["template"]["spec"]) for job in jobs), default=0)
    storage += sum(claim_storage(claim) for claim in rendered.of_kind("PersistentVolumeClaim"))
    return memory, storage


def gib(value: float) -> str:
    return f"{value / GIB:.2f} GiB"


class ClusterDoctor:
    """The checks of one cluster environment. The connection is made once, by the first row;
    when it fails, every other row says it was skipped."""

    def __init__(
        self,
        c: Context,
        cfg: EnvConfig,
        connect_to: Callable[[EnvConfig], Kube] = connect,
        render_env: Callable[[str], Rendered] | None = None,
        now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        pinned: Callable[[], str] = lambda: load_lock().version,
    ) -> None:
        self.c = c
        self.cfg = cfg
        self._connect = connect_to
        self._render = render_env or (lambda env: render(c, load_config(env), RENDER_TAG))
        self._now = now
        self._pinned = pinned
        self._apis: Kube | None = None
        self._error = ""
        self._skew: float | None = None
        self._needs: tuple[int, int] | None = None
        self._namespaces: set[str] = set()

    @property
    def apis(self) -> Kube:
        assert self._apis is not None  # rows after the first run only once it connected
        return self._apis

    def _after_connect(self, row: Callable[[], Result]) -> Callable[[], Result]:
        """ROW, or a skipped row pointing at the first one while there is no connection; a
        row this kubeconfig may not read says so (not_checked); any other error answer fails
        the row in one line (never the response's headers or body)."""

        def run() -> Result:
            if self._apis is None:
                why = self._error or "the API server was not checked"
                return Result(False, f"skipped: {why}", "fix the API server row first")
            try:
                return row()
            except ApiException as exc:
                if exc.status == FORBIDDEN:
                    return not_checked(exc, self.cfg.name)
                return Result(False, describe_error(exc))

        return run

    def needs(self) -> tuple[int, int]:
        """(memory, storage) both cluster environments request, from their rendered manifests."""
        if self._needs is None:
            rendered = [self._render(env) for env in CLUSTER_ENVS]
            both = [rendered_needs(each) for each in rendered]
            self._namespaces = {each.namespace for each in rendered}
            self._needs = (sum(m for m, _ in both), sum(s for _, s in both))
        return self._needs

    # --- rows -------------------------------------------------------------------------------

    def api_server(self) -> Result:
        try:
            self._apis = self._connect(self.cfg)
        except Exit as exc:
            self._error = "the API server is not reachable"
            return Result(False, str(exc.message))
        sent = self._now()
        info, _, headers = self.apis.version.get_code_with_http_info(
            _request_timeout=API_TIMEOUT_SECONDS
        )
        received = self._now()
        date = (headers or {}).get("Date")
        if date:
            server = email.utils.parsedate_to_datetime(date)
            local = sent + (received - sent) / 2
            self._skew = (local - server).total_seconds()
        version, pinned = str(info.git_version), self._pinned()
        detail = f"{self.apis.host}: {version} (k3s.lock pins {pinned})"
        if version != pinned:
            return Result(
                False,
                detail,
                f"run `sudo invoke k3s.install` on the server to get {pinned} "
                "(or pin the running version in k3s.lock)",
            )
        return Result(True, detail)

    def namespace(self) -> Result:
        namespace = self.cfg.namespace
        found = read_or_none(self.apis.core.read_namespace, namespace)
        if found is None:
            return Result(False, f"{namespace} does not exist")
        labels = found.metadata.labels or {}
        wrong = {key: value for key, value in NAMESPACE_LABELS.items() if labels.get(key) != value}
        if wrong:
            pairs = " ".join(f"{key}={value}" for key, value in wrong.items())
            return Result(
                False,
                f"{namespace}: Pod Security labels missing or different: {', '.join(wrong)}",
                f"kubectl label namespace {namespace} --overwrite {pairs}",
            )
        return Result(True, f"{namespace}, Pod Security `restricted` enforced")

    def traefik(self) -> Result:
        apis = self.apis
        deployment = read_or_none(
            apis.apps.read_namespaced_deployment,
            TRAEFIK_DEPLOYMENT,
            INGRESS_CONTROLLER_NAMESPACE,
        )
        groups = {group.name: group for group in apis.apis.get_api_versions().groups or []}
        problems = []
        if deployment is None:
            problems.append(f"no deployment {INGRESS_CONTROLLER_NAMESPACE}/{TRAEFIK_DEPLOYMENT}")
        else:
            ready = deployment.status.ready_replicas or 0
            if ready < (deployment.spec.replicas or 1):
                problems.append(f"{TRAEFIK_DEPLOYMENT} {ready}/{deployment.spec.replicas} ready")
        if TRAEFIK_GROUP not in groups:
            problems.append(f"no {TRAEFIK_GROUP} CRDs (Middleware)")
        if problems:
            return Result(False, "; ".join(problems))
        version = groups[TRAEFIK_GROUP].preferred_version.group_version
        return Result(True, f"{INGRESS_CONTROLLER_NAMESPACE}/{TRAEFIK_DEPLOYMENT} ready, {version}")

    def storage_class(self) -> Result:
        classes = self.apis.storage.list_storage_class().items
        defaults = [
            item.metadata.name
            for item in classes
            if any(
                (item.metadata.annotations or {}).get(key) == "true"
                for key in DEFAULT_CLASS_ANNOTATIONS
            )
        ]
        if not defaults:
            names_ = ", ".join(item.metadata.name for item in classes) or "none"
            return Result(False, f"no default StorageClass (classes: {names_})")
        return Result(True, f"{defaults[0]} (default)")

    def memory(self) -> Result:
        core = self.apis.core
        nodes = core.list_node().items
        allocatable = sum(int(parse_quantity(n.status.allocatable["memory"])) for n in nodes)
        need = self.needs()[0]
        others = 0
        for pod in core.list_pod_for_all_namespaces().items:
            if pod.metadata.namespace in self._namespaces or pod.status.phase in (
                "Succeeded",
                "Failed",
            ):
                continue
            for container in pod.spec.containers:
                requests = (container.resources.requests or {}) if container.resources else {}
                others += int(parse_quantity(requests.get("memory", 0)))
        spare = allocatable - others - need
        detail = (
            f"node allocatable {gib(allocatable)}, other pods request {gib(others)}, "
            f"stage + prod request {gib(need)}: "
            + (f"{gib(spare)} to spare" if spare >= 0 else f"{gib(-spare)} short")
        )
        return Result(spare >= 0, detail)

    def disk(self) -> Result:
        core = self.apis.core
        need = self.needs()[1]
        minimum = self.cfg.toolkit.MIN_FREE_DISK_MB * 1024 * 1024
        capacity = available = 0
        pressure = []
        for node in core.list_node().items:
            name = node.metadata.name
            if any(
                cond.type == "DiskPressure" and cond.status == "True"
                for cond in node.status.conditions or []
            ):
                pressure.append(name)
            fs = self._node_fs(core, name)
            capacity += fs.get("capacityBytes", 0) or int(
                parse_quantity(node.status.capacity.get("ephemeral-storage", 0))
            )
            available += fs.get("availableBytes", 0)
        detail = (
            f"node disk {gib(capacity)}, {gib(available)} free; "
            f"volumes of stage + prod request {gib(need)} (local-path keeps them on this disk)"
        )
        if pressure:
            return Result(False, f"DiskPressure on {', '.join(pressure)}; {detail}")
        return Result(capacity >= need and available >= minimum, detail)

    @staticmethod
    def _node_fs(core: Any, node: str) -> dict[str, int]:
        """The kubelet's view of the node's filesystem ({} without the nodes/proxy right)."""
        try:
            response = core.connect_get_node_proxy_with_path(
                node, "stats/summary", _preload_content=False
            )
            return dict(json.loads(response.data)["node"]["fs"])
        except (ApiException, ValueError, KeyError, TypeError):
            return {}

    def secrets(self) -> Result:
        core, namespace = self.apis.core, self.cfg.namespace
        wanted = [secret.NAME for secret in SECRETS]
        missing = [
            name
            for name in wanted
            if read_or_none(core.read_namespaced_secret, name, namespace) is None
        ]
        if missing:
            return Result(False, f"missing in {namespace}: {', '.join(missing)}")
        return Result(True, ", ".join(wanted))

    def clock(self) -> Result:
        if self._skew is None:
            return Result(False, "the API server sent no Date header")
        detail = (
            f"this machine is {abs(self._skew):.1f}s "
            + ("ahead of" if self._skew > 0 else "behind")
            + " the API server"
        )
        return Result(abs(self._skew) <= MAX_CLOCK_SKEW_SECONDS, detail)

    def checks(self) -> list[Check]:
        env = self.cfg.name
        return [
            Check(
                "kubectl",
                lambda: program_present("kubectl"),
                "install kubectl 1.27+ (render, deploy and logs use it)",
            ),
            Check(
                "API server",
                self.api_server,
                f"start k3s on the server (`systemctl start k3s`), or point KUBECONFIG_PATH in "
                f"env/{env}.env (or $KUBECONFIG) at the cluster's kubeconfig",
            ),
            Check(
                "namespace",
                self._after_connect(self.namespace),
                f"`invoke deploy --env {env}` creates it with its labels",
            ),
            Check(
                "Traefik and its CRDs",
                self._after_connect(self.traefik),
                "k3s ships Traefik and its CRDs: check `kubectl -n kube-system get pods` (k3s "
                "must not run with --disable traefik; `sudo invoke k3s.install` keeps it)",
            ),
            Check(
                "default StorageClass",
                self._after_connect(self.storage_class),
                "kubectl patch storageclass local-path -p "
                '\'{"metadata":{"annotations":{"storageclass.kubernetes.io/is-default-class":"true"}}}\'',
            ),
            Check(
                "memory for stage + prod",
                self._after_connect(self.memory),
                "free memory on the node (other workloads), or lower the requests in "
                "k8s/overlays/<env>",
            ),
            Check(
                "disk under the volumes",
                self._after_connect(self.disk),
                "free disk on the node (local-path volumes live in /var/lib/rancher/k3s/storage) "
                "or give it a bigger disk; MIN_FREE_DISK_MB sets the minimum free",
            ),
            Check(
                "Secrets", self._after_connect(self.secrets), f"invoke secrets.generate --env {env}"
            ),
            Check(
                "clock skew",
                self._after_connect(self.clock),
                "sync both clocks with NTP (`timedatectl set-ntp true`)",
            ),
        ]


def cluster_checks(c: Context, cfg: EnvConfig) -> list[Check]:
    """The rows of `doctor --env stage|prod`: the cluster, then the edge (TLS mode and why,
    certificates)."""
    return [*ClusterDoctor(c, cfg).checks(), *certificates.tls_checks(cfg)]
