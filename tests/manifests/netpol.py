"""A small NetworkPolicy evaluator (networking.k8s.io/v1 semantics) for the policy tests.

A connection is allowed when the source's egress and the destination's ingress both allow
it; a pod selected by no policy of a direction is not isolated in that direction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Pod:
    namespace: str
    labels: dict[str, str] = field(hash=False)


def selector_matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


def _peer_matches(peer: dict[str, Any], other: Pod, policy_namespace: str) -> bool:
    if "ipBlock" in peer:
        return False  # only pod peers are evaluated here
    ns_selector = peer.get("namespaceSelector")
    if ns_selector is None:
        ns_ok = other.namespace == policy_namespace
    else:
        ns_ok = selector_matches(ns_selector, {"kubernetes.io/metadata.name": other.namespace})
    pod_selector = peer.get("podSelector")
    return ns_ok and (pod_selector is None or selector_matches(pod_selector, other.labels))


def _port_matches(ports: list[dict[str, Any]] | None, port: int, protocol: str) -> bool:
    if not ports:
        return True
    return any(
        p.get("protocol", "TCP") == protocol and p.get("port") in (None, port) for p in ports
    )


def _direction_allows(
    policies: list[dict[str, Any]], direction: str, subject: Pod, other: Pod, port: int, proto: str
) -> bool:
    key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    relevant = [
        p
        for p in policies
        if p["metadata"]["namespace"] == subject.namespace
        and direction in p["spec"].get("policyTypes", ["Ingress"])
        and selector_matches(p["spec"]["podSelector"], subject.labels)
    ]
    if not relevant:
        return True
    for policy in relevant:
        for rule in policy["spec"].get(key, []):
            peers = rule.get(peers_key)
            peer_ok = not peers or any(
                _peer_matches(peer, other, policy["metadata"]["namespace"]) for peer in peers
            )
            if peer_ok and _port_matches(rule.get("ports"), port, proto):
                return True
    return False


def allowed(
    policies: list[dict[str, Any]], src: Pod, dst: Pod, port: int, proto: str = "TCP"
) -> bool:
    """Whether SRC may open a connection to DST:PORT under POLICIES."""
    return _direction_allows(policies, "Egress", src, dst, port, proto) and _direction_allows(
        policies, "Ingress", dst, src, port, proto
    )


def ingress_allows(policies: list[dict[str, Any]], src: Pod, dst: Pod, port: int) -> bool:
    """Only DST's side: whether its ingress policies admit SRC on PORT."""
    return _direction_allows(policies, "Ingress", dst, src, port, "TCP")


def egress_allows(policies: list[dict[str, Any]], src: Pod, dst: Pod, port: int) -> bool:
    """Only SRC's side: whether its egress policies let it reach DST on PORT."""
    return _direction_allows(policies, "Egress", src, dst, port, "TCP")
