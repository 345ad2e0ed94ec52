"""`doctor --env`'s memory and disk rows count the real overlays as the budget test does."""

from __future__ import annotations

from desbordante_ops.cluster.doctor import rendered_needs
from desbordante_ops.cluster.manifests.render import Rendered

from .kube_objects import (
    DEPLOY_JOBS,
    LONG_RUNNING_KINDS,
    budget_memory_requests,
    overlay_memory_requests,
    quantity_bytes,
)


def test_doctor_needs_are_the_long_running_requests_the_deploy_peak_and_every_claim(
    all_rendered: dict[str, Rendered],
) -> None:
    """Memory: the long-running workloads plus the larger of the migrate and verify Jobs (a
    transient peak during a deploy), as the manifests' budget counts them."""
    for rendered in all_rendered.values():
        memory, storage = rendered_needs(rendered)
        requests = overlay_memory_requests(rendered.docs)
        long_running = sum(
            value for name, value in requests.items() if name.split("/")[0] in LONG_RUNNING_KINDS
        )
        peak = budget_memory_requests(rendered)[DEPLOY_JOBS]
        assert peak > 0 and memory == long_running + peak
        claims = [doc["spec"] for doc in rendered.of_kind("PersistentVolumeClaim")]
        claims += [
            template["spec"]
            for doc in rendered.of_kind("StatefulSet")
            for template in doc["spec"].get("volumeClaimTemplates", [])
        ]
        assert storage == sum(quantity_bytes(c["resources"]["requests"]["storage"]) for c in claims)
        assert storage > 0 and memory > 0
