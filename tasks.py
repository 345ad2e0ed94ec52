"""Invoke tasks of desbordante-ops (`invoke --list`, `invoke --help TASK`).

Only the namespace lives here; logic is in the desbordante_ops package. Root tasks: config,
doctor, up, down, status, logs. Each area below is one module of desbordante_ops whose
@task functions appear as `invoke AREA.TASK` (a module not written yet is skipped).
"""

from desbordante_ops.namespace import build

AREAS = (
    "images",
    "k3s",
    "secrets",
    "deploy",
    "access",
    "bootstrap",
)

ns = build(AREAS)
