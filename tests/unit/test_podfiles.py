from agents.podfiles import host_aliases, hosts_file, resolv_conf


def test_cluster_first_resolv_conf() -> None:
    assert resolv_conf({}, "team-a", "cluster.local") == (
        "nameserver 10.96.0.10\n"
        "search team-a.svc.cluster.local svc.cluster.local cluster.local\n"
        "options ndots:5\n")


def test_dns_config_merges_like_kubelet() -> None:
    spec = {"dnsConfig": {"nameservers": ["1.2.3.4", "10.96.0.10"],
                          "searches": ["ns1.svc.cluster-domain.example", "my.dns.search.suffix"],
                          "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]}}
    text = resolv_conf(spec, "ns1", "cluster-domain.example")
    assert text.splitlines() == [
        "nameserver 10.96.0.10",
        "nameserver 1.2.3.4",
        "search ns1.svc.cluster-domain.example svc.cluster-domain.example "
        "cluster-domain.example my.dns.search.suffix",
        "options ndots:2 edns0",
    ]


def test_dns_policy_none_uses_only_dns_config() -> None:
    spec = {"dnsPolicy": "None", "dnsConfig": {"nameservers": ["1.1.1.1"],
                                                "searches": ["resolv.conf.local"]}}
    assert resolv_conf(spec, "x", "cluster.local") == (
        "nameserver 1.1.1.1\nsearch resolv.conf.local\n")


def test_at_most_three_nameservers() -> None:
    spec = {"dnsConfig": {"nameservers": ["1.1.1.1", "2.2.2.2", "3.3.3.3"]}}
    assert resolv_conf(spec, "x", "cluster.local").count("nameserver") == 3


def test_hosts_file_has_pod_fqdn_with_subdomain() -> None:
    text = hosts_file(["10.244.1.5"], "db-0", "db", "prod", "cluster.local")
    assert "10.244.1.5\tdb-0.db.prod.svc.cluster.local\tdb-0" in text
    assert text.startswith("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n")


def test_hosts_file_lists_every_pod_ip_and_the_host_aliases_as_kubelet_does() -> None:
    spec = {"hostAliases": [{"ip": "127.0.0.1", "hostnames": ["foo.local", "bar.local"]},
                            {"ip": "10.1.2.3", "hostnames": ["foo.remote", "bar.remote"]}]}
    text = hosts_file(["10.244.1.5", "fd00:10:244:1::5"], "web", None, "default",
                      "cluster.local", host_aliases(spec))
    assert text.splitlines()[7:] == [
        "10.244.1.5\tweb",
        "fd00:10:244:1::5\tweb",
        "",
        "# Entries added by HostAliases.",
        "127.0.0.1\tfoo.local\tbar.local",
        "10.1.2.3\tfoo.remote\tbar.remote",
    ]
    assert host_aliases({}) == [] and "HostAliases" not in hosts_file(
        ["10.244.1.5"], "web", None, "default", "cluster.local")
