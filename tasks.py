"""Invoke tasks of desbordante-ops (`invoke --list`, `invoke --help TASK`).

Only the namespace lives here; tasks are in desbordante_ops/tasks/ (one module per area) over
the libraries in desbordante_ops/{core,local,image,cluster}/.
"""

from desbordante_ops.tasks import namespace

ns = namespace()
