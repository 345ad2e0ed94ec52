"""Invoke tasks of desbordante-ops (`invoke --list`, `invoke --help TASK`).

Only the namespace lives here; the logic is in the desbordante_ops package, one module per area.
"""

from invoke import Collection

from desbordante_ops import access, bootstrap, cluster_secrets, core_tasks, deploy, images, k3s

ns = Collection(*core_tasks.ROOT_TASKS)
ns.add_collection(Collection.from_module(images, name="images"))
ns.add_collection(Collection.from_module(k3s, name="k3s"))
ns.add_collection(Collection.from_module(cluster_secrets, name="secrets"))
ns.add_collection(Collection.from_module(deploy, name="deploy"))
ns.add_collection(Collection.from_module(access, name="access"))
ns.add_collection(Collection.from_module(bootstrap, name="bootstrap"))
