"""Service environment variables, by kubelet's rules."""

from __future__ import annotations

from typing import Any

from agents.serviceenv import service_env, variables_of


def svc(name: str, ns: str, ip: str, *ports: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": ns},
            "spec": {"clusterIP": ip, "ports": list(ports)}}


KUBERNETES = svc("kubernetes", "default", "10.96.0.1",
                 {"name": "https", "port": 443, "protocol": "TCP"})


def test_one_service_gives_the_docker_link_variables() -> None:
    env = variables_of(svc("my-nginx", "default", "10.96.12.34", {"port": 80, "protocol": "TCP"},
                           {"name": "dns-udp", "port": 53, "protocol": "UDP"}))
    assert env == {
        "MY_NGINX_SERVICE_HOST": "10.96.12.34", "MY_NGINX_SERVICE_PORT": "80",
        "MY_NGINX_SERVICE_PORT_DNS_UDP": "53",
        "MY_NGINX_PORT": "tcp://10.96.12.34:80",
        "MY_NGINX_PORT_80_TCP": "tcp://10.96.12.34:80", "MY_NGINX_PORT_80_TCP_PROTO": "tcp",
        "MY_NGINX_PORT_80_TCP_PORT": "80", "MY_NGINX_PORT_80_TCP_ADDR": "10.96.12.34",
        "MY_NGINX_PORT_53_UDP": "udp://10.96.12.34:53", "MY_NGINX_PORT_53_UDP_PROTO": "udp",
        "MY_NGINX_PORT_53_UDP_PORT": "53", "MY_NGINX_PORT_53_UDP_ADDR": "10.96.12.34",
    }


def test_namespace_links_and_the_master_service() -> None:
    services = [KUBERNETES, svc("web", "default", "10.96.1.1", {"port": 80}),
                svc("web", "other", "10.96.2.2", {"port": 8080}),
                svc("headless", "other", "None", {"port": 80}),
                svc("pending", "other", "", {"port": 80})]
    env = service_env(services, "other")
    assert env["KUBERNETES_SERVICE_HOST"] == "10.96.0.1"
    assert env["KUBERNETES_SERVICE_PORT_HTTPS"] == "443"
    assert env["WEB_SERVICE_HOST"] == "10.96.2.2"       # only the pod's own namespace
    assert not any(k.startswith(("HEADLESS_", "PENDING_")) for k in env)
    # enableServiceLinks: false keeps only the master service.
    env = service_env(services, "other", enable_service_links=False)
    assert {k.split("_")[0] for k in env} == {"KUBERNETES"}


def test_garbage_is_skipped() -> None:
    services: list[Any] = [{}, {"metadata": {"name": 3}}, svc("x", "default", "10.96.0.9"),
                           svc("y", "default", "10.96.0.8", {"port": "80"}, {"port": True})]
    assert service_env(services, "default") == {}
