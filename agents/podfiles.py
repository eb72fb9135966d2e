"""The files a pod sees: /etc/hosts, /etc/resolv.conf and /etc/hostname, as kubelet writes them.

resolv.conf follows kubelet's rules for `dnsPolicy` (ClusterFirst by default) and `dnsConfig`:
nameserver is the cluster DNS Service IP, the search list is `<ns>.svc.<domain>
svc.<domain> <domain>`, options `ndots:5`; dnsConfig nameservers/searches are appended and
de-duplicated, options merged by name (at most 3 nameservers, 32 search domains).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

CLUSTER_DNS_IP = "10.96.0.10"
MAX_NAMESERVERS = 3
MAX_SEARCHES = 32


def hosts_file(pod_ips: Sequence[str], hostname: str, subdomain: str | None, namespace: str,
               domain: str, host_aliases: Sequence[tuple[str, Sequence[str]]] = ()) -> str:
    """/etc/hosts as kubelet writes it: the loopback block, a line for each of the pod's IPs
    (both families on a dual-stack cluster), then the pod's spec.hostAliases."""
    lines = [
        "# Kubernetes-managed hosts file.",
        "127.0.0.1\tlocalhost",
        "::1\tlocalhost ip6-localhost ip6-loopback",
        "fe00::0\tip6-localnet",
        "fe00::0\tip6-mcastprefix",
        "fe00::1\tip6-allnodes",
        "fe00::2\tip6-allrouters",
    ]
    for ip in pod_ips:
        if subdomain:
            lines.append(f"{ip}\t{hostname}.{subdomain}.{namespace}.svc.{domain}\t{hostname}")
        else:
            lines.append(f"{ip}\t{hostname}")
    if host_aliases:
        lines += ["", "# Entries added by HostAliases."]
        lines += ["\t".join([ip, *names]) for ip, names in host_aliases]
    return "\n".join(lines) + "\n"


def host_aliases(spec: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """spec.hostAliases as (ip, hostnames), as the API has validated them."""
    out = []
    for alias in spec.get("hostAliases") or []:
        if isinstance(alias, dict) and isinstance(alias.get("ip"), str):
            names = [n for n in alias.get("hostnames") or [] if isinstance(n, str)]
            out.append((alias["ip"], names))
    return out


def _dedupe(items: list[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for item in items:
        if item not in seen:
            seen.add(item)
            out.append(item)
    return out


def resolv_conf(spec: dict[str, Any], namespace: str, domain: str,
                dns_ip: str = CLUSTER_DNS_IP) -> str:
    policy = spec.get("dnsPolicy") or "ClusterFirst"
    config = spec.get("dnsConfig") or {}
    if policy == "ClusterFirst" and spec.get("hostNetwork"):
        policy = "Default"
    nameservers: list[str] = []
    searches: list[str] = []
    options: dict[str, str | None] = {}
    if policy in ("ClusterFirst", "ClusterFirstWithHostNet"):
        nameservers = [dns_ip]
        searches = [f"{namespace}.svc.{domain}", f"svc.{domain}", domain]
        options = {"ndots": "5"}
    # "Default" would copy the node's resolv.conf; an emulated node has none to give, so the
    # pod gets only what dnsConfig adds (like a node whose resolv.conf is empty).
    nameservers += [str(n) for n in config.get("nameservers") or []]
    searches += [str(s) for s in config.get("searches") or [] if len(str(s)) <= 253]
    for opt in config.get("options") or []:
        if isinstance(opt, dict) and opt.get("name"):
            value = opt.get("value")
            options[str(opt["name"])] = None if value is None else str(value)
    nameservers = _dedupe(nameservers)[:MAX_NAMESERVERS]
    searches = _dedupe(searches)[:MAX_SEARCHES]
    lines = [f"nameserver {n}" for n in nameservers]
    if searches:
        lines.append("search " + " ".join(searches))
    if options:
        lines.append("options " + " ".join(k if v is None else f"{k}:{v}"
                                           for k, v in options.items()))
    return "\n".join(lines) + "\n"
