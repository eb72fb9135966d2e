"""Image references, the emulated-image catalog, and how a container's argv is formed."""

from __future__ import annotations

import pytest

from agents.images import BUILTINS, ImageError, resolve_image
from agents.images.catalog import CATALOG
from agents.images.entrypoint import container_argv, expand
from agents.images.flags import FlagError, parse_flags
from agents.images.reference import BadReference, ImageRef, parse_reference

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(("text", "expected"), [
    ("nginx", ImageRef("docker.io", "library/nginx", "", "")),
    ("nginx:1.25", ImageRef("docker.io", "library/nginx", "1.25", "")),
    ("docker.io/library/nginx:latest", ImageRef("docker.io", "library/nginx", "latest", "")),
    ("index.docker.io/library/busybox", ImageRef("docker.io", "library/busybox", "", "")),
    ("registry.k8s.io/e2e-test-images/agnhost:2.52",
     ImageRef("registry.k8s.io", "e2e-test-images/agnhost", "2.52", "")),
    ("gcr.io/google-samples/hello-app:1.0",
     ImageRef("gcr.io", "google-samples/hello-app", "1.0", "")),
    (f"busybox@{DIGEST}", ImageRef("docker.io", "library/busybox", "", DIGEST)),
    (f"nginx:1.25@{DIGEST}", ImageRef("docker.io", "library/nginx", "1.25", DIGEST)),
    ("localhost:5000/team/app:v1", ImageRef("localhost:5000", "team/app", "v1", "")),
    ("traefik/whoami:v1.10", ImageRef("docker.io", "traefik/whoami", "v1.10", "")),
    ("podnet/echo", ImageRef("docker.io", "podnet/echo", "", "")),
])
def test_parse_reference(text: str, expected: ImageRef) -> None:
    assert parse_reference(text) == expected


@pytest.mark.parametrize(("text", "why"), [
    ("", "invalid reference format"),
    (" nginx", "invalid reference format"),
    ("NGINX", "must be lowercase"),
    ("nginx:", "bad tag"),
    ("nginx:-x", "bad tag"),
    ("nginx@sha256:xyz", "bad digest"),
    ("a//b", "invalid reference format"),
    ("nginx/", "invalid reference format"),
    ("ng!nx", "invalid reference format"),
])
def test_garbage_references_are_refused(text: str, why: str) -> None:
    with pytest.raises(BadReference, match=why):
        parse_reference(text)


@pytest.mark.parametrize("image", [
    "nginx", "nginx:1.25", "docker.io/library/nginx:latest", "registry.k8s.io/nginx-slim:0.24",
    "httpd:2.4", "busybox:1.36", "alpine", "debian:12", "ubuntu:22.04", "curlimages/curl:8.5.0",
    "nicolaka/netshoot", "registry.k8s.io/e2e-test-images/jessie-dnsutils:1.3",
    "registry.k8s.io/e2e-test-images/agnhost:2.52", "traefik/whoami", "hashicorp/http-echo",
    "registry.k8s.io/echoserver:1.10", "gcr.io/google-samples/hello-app:1.0",
    "registry.k8s.io/serve_hostname", "registry.k8s.io/pause:3.9", "k8s.gcr.io/pause",
    "gcr.io/google_containers/pause", f"busybox@{DIGEST}",
    "public.ecr.aws/docker/library/nginx:1.25", "podnet/echo", "podnet/toolbox:v1",
    "registry.k8s.io/busybox", "registry.k8s.io/e2e-test-images/httpd:2.4.38-4",
    "k8s.gcr.io/echoserver:1.4", "gcr.io/kubernetes-e2e-test-images/dnsutils:1.3",
])
def test_tutorial_images_resolve(image: str) -> None:
    assert callable(resolve_image(image))


def test_unknown_image_says_what_is_emulated_and_how_to_bring_your_own() -> None:
    with pytest.raises(ImageError) as info:
        resolve_image("redis:7")
    message = str(info.value)
    assert info.value.reason == "ErrImagePull"
    assert "'redis:7' is not emulated" in message
    assert "nginx" in message and "agnhost" in message and "podnet/echo" in message
    assert "py:package.module:function" in message


def test_unparseable_image_is_invalid_image_name() -> None:
    with pytest.raises(ImageError) as info:
        resolve_image("Nginx")
    assert info.value.reason == "InvalidImageName"


def test_every_catalog_entry_runs_something() -> None:
    for path, image in CATALOG.items():
        assert image.about, path
        argv = container_argv(image.entrypoint, image.cmd, [], [])
        assert argv, path
    assert set(BUILTINS) == {"podnet/echo", "podnet/toolbox", "podnet/pause"}


@pytest.mark.parametrize(("text", "expected"), [
    ("$(A)", "x"),
    ("pre-$(A)-post", "pre-x-post"),
    ("$(MISSING)", "$(MISSING)"),
    ("$$(A)", "$(A)"),
    ("$$", "$"),
    ("$A", "$A"),
    ("cost $", "cost $"),
    ("$(A", "$(A"),
    ("$(A)$(B)", "xy z"),
])
def test_kubelet_var_expansion(text: str, expected: str) -> None:
    assert expand(text, {"A": "x", "B": "y z"}) == expected


@pytest.mark.parametrize(("command", "args", "expected"), [
    ([], [], ["/ep", "default"]),
    (["sh"], [], ["sh"]),                       # command drops the image's CMD
    ([], ["other"], ["/ep", "other"]),          # args replace CMD only
    (["sh", "-c"], ["echo hi"], ["sh", "-c", "echo hi"]),
])
def test_command_and_args_override_entrypoint_and_cmd(command: list[str], args: list[str],
                                                      expected: list[str]) -> None:
    assert container_argv(["/ep"], ["default"], command, args) == expected


def test_go_style_flags() -> None:
    defaults: dict[str, bool | int | str] = {"port": 9376, "tcp": False, "text": ""}
    values, rest = parse_flags(["--port", "80", "-tcp", "-text=a b", "pos"], defaults)
    assert values == {"port": 80, "tcp": True, "text": "a b"} and rest == ["pos"]
    assert parse_flags(["--tcp=false"], defaults)[0]["tcp"] is False
    with pytest.raises(FlagError, match="unknown flag: --nope"):
        parse_flags(["--nope"], defaults)
    with pytest.raises(FlagError, match='invalid argument "x"'):
        parse_flags(["--port=x"], defaults)
    with pytest.raises(FlagError, match="needs an argument"):
        parse_flags(["--port"], defaults)
