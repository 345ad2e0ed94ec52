"""What to tell a person whose kubeconfig may not do what a deploy needs.

A kubeconfig from `invoke access.grant` is a viewer's (read-only) or a devops one (deploys
its environment). A write refused with 403 means something different for each: a viewer
cannot deploy at all; a devops grant made before the toolkit needed a new right (e.g. the
deploy lock's Lease) is fixed by granting again, which updates the Role.
"""

from __future__ import annotations

from desbordante_ops.cluster.kube.client import Kube
from desbordante_ops.cluster.kube.objects import can_i


def denied(k: Kube, namespace: str, env: str, what: str, task: str = "deploy") -> str:
    """One line: this kubeconfig may not WHAT in NAMESPACE (for TASK), why, and whom to ask."""
    grant = f"`invoke access.grant --name NAME --role devops --env {env}`"
    if can_i(k.authorization, "patch", "deployments", "apps", namespace):
        return (
            f"This kubeconfig may not {what} in {namespace}: its devops Role is older than this "
            f"toolkit; ask a cluster admin to run {grant} again, which updates the Role."
        )
    return (
        f"This kubeconfig may not {what} in {namespace}: it is a viewer's, and viewers cannot "
        f"{task}; ask a cluster admin for a devops grant ({grant})."
    )
