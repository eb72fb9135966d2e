"""Cluster DNS for `cluster.local`: pure answers (`records`) and the servers (`server`)."""

from controlplane.dns.records import ClusterDnsIndex

__all__ = ["ClusterDnsIndex"]
