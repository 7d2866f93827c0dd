"""A small NetworkPolicy evaluator: may pod A open a TCP connection to port P of pod B?"""

from dataclasses import dataclass, field

from tests.deploy.manifests import workloads


@dataclass(frozen=True)
class Pod:
    name: str
    namespace: str
    labels: dict = field(default_factory=dict)
    ports: dict = field(default_factory=dict)

    @property
    def namespace_labels(self) -> dict:
        return {"kubernetes.io/metadata.name": self.namespace}


def cluster_pods(docs: tuple[dict, ...]) -> list[Pod]:
    return [Pod(w.name, w.namespace, w.labels, w.container_ports()) for w in workloads(docs)]


def selects(selector: dict | None, labels: dict) -> bool:
    """Label selector semantics; an empty selector selects everything."""
    if selector is None:
        return True
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        present = key in labels
        ok = {
            "In": present and labels.get(key) in values,
            "NotIn": not present or labels.get(key) not in values,
            "Exists": present,
            "DoesNotExist": not present,
        }[operator]
        if not ok:
            return False
    return True


class Policies:
    """The NetworkPolicies of one rendered overlay."""

    def __init__(self, docs: tuple[dict, ...]) -> None:
        self._policies = [d for d in docs if d["kind"] == "NetworkPolicy"]

    def allows(self, source: Pod, target: Pod, port: int, protocol: str = "TCP") -> bool:
        """Both ends must allow it: the source's egress policies and the target's ingress policies."""
        return self._side(source, target, (port, protocol), "Egress", "to") and self._side(
            target, source, (port, protocol), "Ingress", "from"
        )

    def _side(self, pod: Pod, peer: Pod, port: tuple[int, str], direction: str, key: str) -> bool:
        target = pod if direction == "Ingress" else peer
        applying = [
            p
            for p in self._policies
            if p["metadata"]["namespace"] == pod.namespace
            and selects(p["spec"]["podSelector"], pod.labels)
            and direction in p["spec"].get("policyTypes", ["Ingress"])
        ]
        if not applying:
            return True
        rules = [rule for p in applying for rule in p["spec"].get(direction.lower(), [])]
        return any(
            self._peer_matches(rule.get(key), peer, pod.namespace) and _port_matches(rule.get("ports"), port, target)
            for rule in rules
        )

    @staticmethod
    def _peer_matches(peers: list[dict] | None, peer: Pod, policy_namespace: str) -> bool:
        if peers is None:
            return True
        for entry in peers:
            if "ipBlock" in entry:
                continue
            if "namespaceSelector" in entry:
                namespace_ok = selects(entry["namespaceSelector"], peer.namespace_labels)
            else:
                namespace_ok = peer.namespace == policy_namespace
            if namespace_ok and selects(entry.get("podSelector"), peer.labels):
                return True
        return False


def _port_matches(ports: list[dict] | None, port_protocol: tuple[int, str], target: Pod) -> bool:
    if not ports:
        return True
    port, protocol = port_protocol
    for entry in ports:
        if entry.get("protocol", "TCP") != protocol:
            continue
        wanted = entry.get("port")
        if wanted is None:
            return True
        number = target.ports.get(wanted) if isinstance(wanted, str) else wanted
        if number is not None and number <= port <= entry.get("endPort", number):
            return True
    return False
