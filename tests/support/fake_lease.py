"""An in-memory CoordinationV1Api subset for the deploy lock (cluster/lock.py) in the tests that
use the in-memory API fakes: create (409 when it exists), read (404), replace (409 on a stale
resourceVersion, as the API server answers). The lock's own tests use the fake API server."""

from __future__ import annotations

import copy
from typing import Any

from kubernetes.client.exceptions import ApiException


class FakeCoordination:
    """Leases by (namespace, name); every write bumps the resourceVersion."""

    def __init__(self) -> None:
        self.leases: dict[tuple[str, str], Any] = {}
        self.version = 0
        self.holders: list[str | None] = []  # holderIdentity of every write, in order

    def _store(self, namespace: str, body: Any) -> Any:
        self.version += 1
        stored = copy.deepcopy(body)
        stored.metadata.resource_version = str(self.version)
        self.leases[(namespace, stored.metadata.name)] = stored
        self.holders.append(stored.spec.holder_identity)
        return copy.deepcopy(stored)

    def create_namespaced_lease(self, namespace: str, body: Any) -> Any:
        if (namespace, body.metadata.name) in self.leases:
            raise ApiException(status=409, reason="AlreadyExists")
        return self._store(namespace, body)

    def read_namespaced_lease(self, name: str, namespace: str) -> Any:
        if (namespace, name) not in self.leases:
            raise ApiException(status=404, reason=f"lease {name} not found")
        return copy.deepcopy(self.leases[(namespace, name)])

    def replace_namespaced_lease(self, name: str, namespace: str, body: Any) -> Any:
        stored = self.leases.get((namespace, name))
        if stored is None:
            raise ApiException(status=404, reason=f"lease {name} not found")
        if body.metadata.resource_version != stored.metadata.resource_version:
            raise ApiException(status=409, reason="Conflict: the object has been modified")
        return self._store(namespace, body)
