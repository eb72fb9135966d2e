"""Every image podnet emulates, by repository path, whatever the registry, tag or digest.

`lookup` maps a parsed reference to its container coroutine, or raises the ErrImagePull
that says what is emulated and how to bring your own image.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from agents.images import (
    ContainerContext,
    ImageError,
    agnhost,
    echoserver,
    helloapp,
    httpecho,
    webserver,
    whoami,
)
from agents.images.process import Emulated, Program, run_tool, runner
from agents.images.reference import ImageRef


async def _pause(ctx: ContainerContext, argv: list[str]) -> int:
    await asyncio.get_running_loop().create_future()
    return 0


async def _zsh(ctx: ContainerContext, argv: list[str]) -> int:
    # netshoot's default shell; with no stdin it exits at once, as any shell does.
    return await run_tool(ctx, ["sh", *argv[1:]])


async def _curl_entrypoint(ctx: ContainerContext, argv: list[str]) -> int:
    # curlimages/curl's /entrypoint.sh: options alone (`-s http://...`) mean curl options.
    rest = argv[1:]
    if not rest or rest[0].startswith("-"):
        rest = ["curl", *rest]
    return await run_tool(ctx, rest)


def _shell_image(about: str, cmd: tuple[str, ...],
                 programs: dict[str, Program] | None = None) -> Emulated:
    return Emulated(about, cmd=cmd, programs=programs or {})


_NGINX = Emulated("HTTP on port 80: the stock \"Welcome to nginx!\" page, 404s, an access-log "
                  "line per request", entrypoint=("/docker-entrypoint.sh",),
                  cmd=("nginx", "-g", "daemon off;"),
                  programs={"docker-entrypoint.sh": webserver.docker_entrypoint,
                            "nginx": webserver.nginx, "nginx-debug": webserver.nginx})
_NGINX_SLIM = Emulated(_NGINX.about, cmd=("nginx", "-g", "daemon off;"),
                       programs={"nginx": webserver.nginx})
_HTTPD = Emulated("HTTP on port 80: \"It works!\", Apache's 404s and access log",
                  cmd=("httpd-foreground",),
                  programs={"httpd-foreground": webserver.httpd, "httpd": webserver.httpd})
_AGNHOST = Emulated("netexec, serve-hostname, pause, dns-suffix, dns-server-list, etc-hosts",
                    entrypoint=("/agnhost",), cmd=("pause",),
                    programs={"agnhost": agnhost.agnhost, "agnhost-2": agnhost.agnhost})
_PAUSE = Emulated("idles", entrypoint=("/pause",), programs={"pause": _pause}, shell=False)
_BUSYBOX = _shell_image("a shell: `sh -c`, `sleep 3600`, wget, nslookup, nc, ping ...", ("sh",))
_DEBIAN = _shell_image("a shell (bash) and the toolbox", ("bash",))
_DNSUTILS = _shell_image("a shell with dig and nslookup", ("bash",))

CATALOG: dict[str, Emulated] = {
    "library/nginx": _NGINX,
    "e2e-test-images/nginx": _NGINX,
    "nginx-slim": _NGINX_SLIM,
    "google_containers/nginx-slim": _NGINX_SLIM,
    "library/httpd": _HTTPD,
    "e2e-test-images/httpd": _HTTPD,
    "library/busybox": _BUSYBOX,
    "e2e-test-images/busybox": _BUSYBOX,
    "busybox": _BUSYBOX,                    # registry.k8s.io/busybox
    "google-containers/busybox": _BUSYBOX,
    "library/alpine": _shell_image("a shell (/bin/sh) and the toolbox", ("/bin/sh",)),
    "library/debian": _DEBIAN,
    "library/ubuntu": _DEBIAN,
    "curlimages/curl": Emulated("curl (no arguments: curl's usage, exit 2)",
                                entrypoint=("/entrypoint.sh",), cmd=("curl",),
                                programs={"entrypoint.sh": _curl_entrypoint}),
    "nicolaka/netshoot": _shell_image("a shell (zsh) with curl, dig, nc, ping, ip ...",
                                      ("zsh",), {"zsh": _zsh}),
    "e2e-test-images/jessie-dnsutils": _DNSUTILS,
    "kubernetes-e2e-test-images/dnsutils": _DNSUTILS,
    "e2e-test-images/dnsutils": _DNSUTILS,
    "e2e-test-images/agnhost": _AGNHOST,
    "kubernetes-e2e-test-images/agnhost": _AGNHOST,
    "traefik/whoami": Emulated("HTTP on 80 (`--port`, $WHOAMI_PORT_NUMBER): hostname, IPs, "
                               "RemoteAddr, headers", entrypoint=("/whoami",),
                               programs={"whoami": whoami.run}, shell=False),
    "containous/whoami": Emulated("traefik/whoami's old name", entrypoint=("/whoami",),
                                  programs={"whoami": whoami.run}, shell=False),
    "hashicorp/http-echo": Emulated("HTTP on :5678 (`-listen`) answering `-text`",
                                    entrypoint=("/http-echo",),
                                    programs={"http-echo": httpecho.run}, shell=False),
    "echoserver": Emulated("HTTP on 8080 describing each request",
                           cmd=("/usr/local/bin/run.sh",),
                           programs={"run.sh": echoserver.run}),
    "google_containers/echoserver": Emulated("HTTP on 8080 describing each request",
                                             cmd=("/usr/local/bin/run.sh",),
                                             programs={"run.sh": echoserver.run}),
    "google-samples/hello-app": Emulated("HTTP on 8080 ($PORT): Hello, world!, version, "
                                         "hostname", cmd=("/hello-app",),
                                         programs={"hello-app": helloapp.run}, shell=False),
    "google-samples/containers/gke/hello-app": Emulated(
        "hello-app", cmd=("/hello-app",), programs={"hello-app": helloapp.run}, shell=False),
    "serve_hostname": Emulated("HTTP on 9376 answering the pod's hostname",
                               entrypoint=("/serve_hostname",),
                               programs={"serve_hostname": agnhost.serve_hostname_image},
                               shell=False),
    "google_containers/serve_hostname": Emulated(
        "HTTP on 9376 answering the pod's hostname", entrypoint=("/serve_hostname",),
        programs={"serve_hostname": agnhost.serve_hostname_image}, shell=False),
    "pause": _PAUSE,
    "google_containers/pause": _PAUSE,
    "google_containers/pause-amd64": _PAUSE,
}

# What the ErrImagePull message offers (the README's images table has them all).
OFFERED = ("nginx, httpd, busybox, alpine, debian, ubuntu, curlimages/curl, nicolaka/netshoot, "
           "traefik/whoami, hashicorp/http-echo, registry.k8s.io/echoserver, "
           "gcr.io/google-samples/hello-app, registry.k8s.io/serve_hostname, "
           "registry.k8s.io/e2e-test-images/agnhost, .../jessie-dnsutils, registry.k8s.io/pause, "
           "podnet/echo, podnet/toolbox, podnet/pause")


def _key(ref: ImageRef) -> str:
    path = ref.path
    if path.startswith("docker/library/"):        # public.ecr.aws/docker/library/nginx
        path = path.removeprefix("docker/")
    return path


def lookup(ref: ImageRef, image: str) -> Callable[[ContainerContext], Awaitable[int]]:
    emulated = CATALOG.get(_key(ref))
    if emulated is None:
        raise ImageError(f"image {image!r} is not emulated by podnet (no registry is "
                         f"contacted). Emulated: {OFFERED}. Your own: image "
                         "py:package.module:function running `async def function(ctx)`")
    return runner(emulated)
