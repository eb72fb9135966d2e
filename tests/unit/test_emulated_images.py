"""The emulated tutorial images, run as containers on a real PodNet and talked to over it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from typing import Any

import pytest
import structlog

from agents.images import ContainerContext, PodInfo, StartError, resolve_image
from agents.images.agnhost import resolv_values
from agents.images.echoserver import echo_text
from agents.images.helloapp import version_of
from agents.images.netexec import BadDial, dial_output, parse_dial, udp_reply
from agents.images.webserver import access_line, nginx_site, respond, version_for
from agents.images.whoami import whoami_text
from agents.netstack import NodeNetwork, PodNet
from agents.podfiles import hosts_file, resolv_conf
from agents.runtime import _run_image
from agents.toolbox import ExecTarget
from agents.toolbox.httpclient import Progress, read_body, read_head

SERVER_IP, CLIENT_IP, OTHER_IP = "10.244.3.10", "10.244.3.11", "10.244.3.12"


class Lines:
    def __init__(self) -> None:
        self.text = ""

    def write(self, text: str) -> int:
        self.text += text
        return len(text)

    def flush(self) -> None:
        pass


@dataclass
class Net:
    node: NodeNetwork
    server: PodNet
    client: PodNet
    other: PodNet
    tasks: list[asyncio.Task[int | None]] = field(default_factory=list)


@pytest.fixture
async def net() -> AsyncIterator[Net]:
    node = NodeNetwork("node-3", "10.244.3.0/24")
    pods = [node.attach(ip, pod=name, namespace="demo", hostname=name)
            for ip, name in ((SERVER_IP, "web-0"), (CLIENT_IP, "client"), (OTHER_IP, "peer"))]
    n = Net(node, pods[0], pods[1], pods[2])
    yield n
    for task in n.tasks:
        task.cancel()
    await asyncio.gather(*n.tasks, return_exceptions=True)
    for ip in (SERVER_IP, CLIENT_IP, OTHER_IP):
        node.detach(ip)


def container(pod: PodNet, image: str, *, command: list[str] | None = None,
              args: list[str] | None = None, env: dict[str, str] | None = None,
              files: dict[str, str] | None = None) -> tuple[ContainerContext, Lines]:
    out = Lines()
    spec: dict[str, Any] = {"hostname": pod.hostname}
    all_files = {"/etc/hosts": hosts_file([pod.ip], pod.hostname, None, "demo", "cluster.local"),
                 "/etc/resolv.conf": resolv_conf(spec, "demo", "cluster.local"),
                 **(files or {})}
    target = ExecTarget(net=pod, pod=pod.hostname, namespace="demo", node="node-3",
                        pod_ip=pod.ip, hostname=pod.hostname, env=dict(env or {}),
                        files=all_files)
    info = PodInfo(name=pod.hostname, namespace="demo", ip=pod.ip, node="node-3",
                   hostname=pod.hostname)
    ctx = ContainerContext(name="c", args=list(args or []), env=dict(env or {}), ports=[],
                           pod=info, net=pod, log=structlog.get_logger(), stdout=out,
                           command=list(command or []), image=image, target=target)
    return ctx, out


def start(n: Net, ctx: ContainerContext) -> asyncio.Task[int | None]:
    coro: Awaitable[int | None] = resolve_image(ctx.image)(ctx)

    async def run() -> int | None:
        return await coro

    task = asyncio.create_task(run())
    n.tasks.append(task)
    return task


async def listening(pod: PodNet, port: int) -> None:
    for _ in range(10_000):
        if any(lst.port == port for lst in pod.listeners()):
            return
        await asyncio.sleep(0)
    raise AssertionError(f"nothing listened on {port}")


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes
    client_port: int


async def http(pod: PodNet, ip: str, port: int, path: str = "/", method: str = "GET",
               ) -> Reply:
    reader, writer = await pod.open_connection(ip, port)
    client_port = writer.get_extra_info("sockname")[1]
    writer.write(f"{method} {path} HTTP/1.1\r\nHost: {ip}:{port}\r\nUser-Agent: test/1\r\n"
                 "Accept: */*\r\n\r\n".encode())
    head = await read_head(reader)
    body = bytearray()

    async def sink(data: bytes) -> None:
        body.extend(data)

    if method != "HEAD":
        await read_body(reader, head, sink, Progress())
    writer.close()
    return Reply(head.status, {k.lower(): v for k, v in head.headers}, bytes(body), client_port)


# ---- nginx and httpd --------------------------------------------------------------------

async def test_nginx_serves_the_welcome_page_and_logs_the_client(net: Net) -> None:
    ctx, out = container(net.server, "nginx:1.25")
    start(net, ctx)
    await listening(net.server, 80)
    page = await http(net.client, SERVER_IP, 80)
    assert page.status == 200
    assert page.headers["server"] == "nginx/1.25.5"
    assert page.headers["content-type"] == "text/html"
    assert b"<title>Welcome to nginx!</title>" in page.body
    assert int(page.headers["content-length"]) == len(page.body) == 615
    head = await http(net.client, SERVER_IP, 80, method="HEAD")
    assert head.status == 200 and head.headers["content-length"] == "615"
    missing = await http(net.client, SERVER_IP, 80, "/nope")
    assert missing.status == 404
    assert b"<center>nginx/1.25.5</center>" in missing.body
    assert (await http(net.client, SERVER_IP, 80, method="POST")).status == 405
    lines = out.text.splitlines()
    assert "Configuration complete; ready for start up" in lines[0]
    access = [line for line in lines if line.startswith(CLIENT_IP)]
    assert access[0].endswith('"GET / HTTP/1.1" 200 615 "-" "test/1" "-"')
    assert access[1].endswith('"HEAD / HTTP/1.1" 200 0 "-" "test/1" "-"')
    assert '"GET /nope HTTP/1.1" 404' in access[2]


async def test_nginx_serves_the_containers_files(net: Net) -> None:
    ctx, _ = container(net.server, "registry.k8s.io/nginx-slim:0.24")
    assert ctx.target is not None
    start(net, ctx)
    await listening(net.server, 80)
    ctx.target.files["/usr/share/nginx/html/index.html"] = "web-0\n"   # as `echo >` would
    assert (await http(net.client, SERVER_IP, 80)).body == b"web-0\n"


async def test_a_script_can_start_the_images_own_server(net: Net) -> None:
    # The common tutorial shape: prepare a page, then run the image's server in the foreground.
    ctx, _ = container(net.server, "nginx", command=[
        "sh", "-c", "echo \"hello from $(hostname)\" > /usr/share/nginx/html/index.html && "
        "exec nginx -g 'daemon off;'"])
    start(net, ctx)
    await listening(net.server, 80)
    assert (await http(net.client, SERVER_IP, 80)).body == b"hello from web-0\n"


async def test_a_script_cannot_start_programs_its_image_lacks(net: Net) -> None:
    ctx, out = container(net.server, "busybox", command=["sh", "-c", "nginx -g 'daemon off;'"])
    assert await start(net, ctx) == 127
    assert "sh: 1: nginx: not found" in out.text


async def test_httpd_says_it_works(net: Net) -> None:
    ctx, out = container(net.server, "httpd:2.4")
    start(net, ctx)
    await listening(net.server, 80)
    page = await http(net.client, SERVER_IP, 80)
    assert page.body == b"<html><body><h1>It works!</h1></body></html>\n"
    assert page.headers["server"] == "Apache/2.4.62 (Unix)"
    assert (await http(net.client, SERVER_IP, 80, "/x")).status == 404
    assert f'{CLIENT_IP} - - [' in out.text and '"GET / HTTP/1.1" 200 45' in out.text


def test_nginx_pure_logic() -> None:
    site = nginx_site("1.25.3-alpine")
    assert site.software == "nginx/1.25.3"
    assert version_for("latest", {}, "9.9.9") == "9.9.9"
    reply = respond(site, "GET", "/../../etc/passwd", {"/etc/passwd": "secret"})
    assert reply.status == 404      # the path cannot leave the document root
    line = access_line(site, client="10.244.1.2", when=__import__("datetime").datetime(
        2026, 1, 2, 3, 4, 5, tzinfo=__import__("datetime").UTC), request_line="GET / HTTP/1.1",
        status=200, size=615, referer=None, agent="curl/8.5.0", forwarded=None)
    assert line == ('10.244.1.2 - - [02/Jan/2026:03:04:05 +0000] "GET / HTTP/1.1" 200 615 '
                    '"-" "curl/8.5.0" "-"\n')


# ---- shell images -------------------------------------------------------------------------

async def test_busybox_runs_its_command_and_returns_the_exit_code(net: Net) -> None:
    ctx, out = container(net.server, "busybox", command=["sh", "-c", "exit 3"])
    assert await start(net, ctx) == 3
    ctx, out = container(net.server, "busybox", command=["echo"], args=["hello", "world"])
    assert await start(net, ctx) == 0
    assert out.text == "hello world\n"
    ctx, out = container(net.server, "alpine", command=["no-such-tool"])
    assert await start(net, ctx) == 127
    assert "not found" in out.text


async def test_shell_images_without_command_exit_at_once(net: Net) -> None:
    for image in ("busybox", "alpine:3.19", "debian", "ubuntu:24.04", "nicolaka/netshoot",
                  "registry.k8s.io/e2e-test-images/jessie-dnsutils:1.3"):
        ctx, _ = container(net.server, image)
        assert await start(net, ctx) == 0, image


async def test_curl_image_without_arguments_prints_usage(net: Net) -> None:
    ctx, out = container(net.server, "curlimages/curl")
    assert await start(net, ctx) == 2
    assert "curl --help" in out.text


async def test_curl_image_takes_curl_options_as_args(net: Net) -> None:
    web, _ = container(net.server, "traefik/whoami")
    start(net, web)
    await listening(net.server, 80)
    ctx, out = container(net.client, "curlimages/curl", args=["-s", f"http://{SERVER_IP}/"])
    assert await start(net, ctx) == 0
    assert f"RemoteAddr: {CLIENT_IP}:" in out.text


async def test_sleep_idles_until_cancelled(net: Net) -> None:
    ctx, _ = container(net.server, "busybox", command=["sleep", "3600"])
    task = start(net, ctx)
    for _ in range(100):
        await asyncio.sleep(0)
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_an_image_without_a_shell_cannot_run_one(net: Net) -> None:
    ctx, _ = container(net.server, "traefik/whoami", command=["sh", "-c", "echo hi"])
    with pytest.raises(StartError, match='exec: "sh": executable file not found in \\$PATH'):
        await start(net, ctx)


# ---- agnhost ------------------------------------------------------------------------------

async def test_netexec_endpoints(net: Net) -> None:
    ctx, out = container(net.server, "registry.k8s.io/e2e-test-images/agnhost:2.52",
                         args=["netexec", "--http-port=8080", "--udp-port=8081"])
    task = start(net, ctx)
    await listening(net.server, 8080)
    hostname = await http(net.client, SERVER_IP, 8080, "/hostname")
    assert (hostname.status, hostname.body) == (200, b"web-0")
    assert "server" not in hostname.headers
    clientip = await http(net.client, SERVER_IP, 8080, "/clientip")
    assert clientip.body.decode() == f"{CLIENT_IP}:{clientip.client_port}"
    assert (await http(net.client, SERVER_IP, 8080, "/echo?msg=hi")).body == b"hi"
    assert (await http(net.client, SERVER_IP, 8080, "/echo?msg=x&code=404")).status == 404
    assert (await http(net.client, SERVER_IP, 8080, "/")).body.startswith(b"NOW: 20")
    assert (await http(net.client, SERVER_IP, 8080, "/healthz")).status == 200
    shell = await http(net.client, SERVER_IP, 8080, "/shell?cmd=echo%20hello")
    assert json.loads(shell.body) == {"output": "hello\n"}
    failed = await http(net.client, SERVER_IP, 8080, "/shell?cmd=exit%204")
    assert json.loads(failed.body) == {"error": "exit status 4"}
    bad = await http(net.client, SERVER_IP, 8080, "/dial?host=x&port=80")
    assert bad.status == 400 and bad.body == b"request parameter not specified. <nil>\n"
    assert "GET /hostname" in out.text
    exit_reply = await http(net.client, SERVER_IP, 8080, "/exit?code=3")
    assert exit_reply.status == 200
    assert await task == 3


async def test_netexec_dials_another_pod_over_http_and_udp(net: Net) -> None:
    for pod in (net.server, net.other):
        ctx, _ = container(pod, "registry.k8s.io/e2e-test-images/agnhost:2.52",
                           command=["/agnhost", "netexec"])
        start(net, ctx)
        await listening(pod, 8080)
    dial = await http(net.client, SERVER_IP, 8080,
                      f"/dial?request=hostname&protocol=http&host={OTHER_IP}&port=8080&tries=2")
    assert json.loads(dial.body) == {"responses": ["peer", "peer"]}
    udp = await http(net.client, SERVER_IP, 8080,
                     f"/dial?request=clientip&protocol=udp&host={OTHER_IP}&port=8081")
    assert json.loads(udp.body)["responses"][0].startswith(f"{SERVER_IP}:")
    refused = await http(net.client, SERVER_IP, 8080,
                         f"/dial?request=hostname&host={OTHER_IP}&port=9999")
    errors = json.loads(refused.body)["errors"]
    assert "connect: connection refused" in errors[0] and "responses" not in refused.body.decode()


async def test_serve_hostname_http_tcp_udp(net: Net) -> None:
    ctx, _ = container(net.server, "registry.k8s.io/serve_hostname")
    start(net, ctx)
    await listening(net.server, 9376)
    assert (await http(net.client, SERVER_IP, 9376)).body == b"web-0"
    ctx, _ = container(net.other, "registry.k8s.io/e2e-test-images/agnhost:2.52",
                       args=["serve-hostname", "--tcp", "--http=false", "--port", "7000"])
    start(net, ctx)
    await listening(net.other, 7000)
    reader, writer = await net.client.open_connection(OTHER_IP, 7000)
    assert await reader.read() == b"peer"
    writer.close()
    ctx, out = container(net.other, "registry.k8s.io/e2e-test-images/agnhost:2.52",
                         args=["serve-hostname", "--udp"])
    assert await start(net, ctx) == 1
    assert "Can't serve TCP/UDP mode and HTTP mode at the same time" in out.text


async def test_agnhost_dns_tools_and_pause(net: Net) -> None:
    image = "registry.k8s.io/e2e-test-images/agnhost:2.52"
    ctx, out = container(net.server, image, args=["dns-suffix"])
    assert await start(net, ctx) == 0
    assert out.text == "demo.svc.cluster.local,svc.cluster.local,cluster.local\n"
    ctx, out = container(net.server, image, args=["dns-server-list"])
    assert await start(net, ctx) == 0 and out.text == "10.96.0.10\n"
    ctx, out = container(net.server, image, args=["etc-hosts"])
    assert await start(net, ctx) == 0 and f"{SERVER_IP}\tweb-0" in out.text
    ctx, out = container(net.server, image, args=["bogus"])
    assert await start(net, ctx) == 1 and 'unknown command "bogus"' in out.text
    ctx, out = container(net.server, image, args=["netexec", "--nope"])
    assert await start(net, ctx) == 1 and "unknown flag: --nope" in out.text
    ctx, out = container(net.server, image)
    task = start(net, ctx)
    for _ in range(20):
        await asyncio.sleep(0)
    assert not task.done() and out.text == "Paused\n"


def test_netexec_pure_logic() -> None:
    assert udp_reply(b"hostname\n", "web-0", ("10.244.1.2", 5)) == b"web-0"
    assert udp_reply(b"ECHO Hi There", "web-0", ("10.244.1.2", 5)) == b"hi there"
    assert udp_reply(b"clientip", "web-0", ("10.244.1.2", 5)) == b"10.244.1.2:5"
    assert udp_reply(b"what", "web-0", ("10.244.1.2", 5)) is None
    assert parse_dial({"request": "hostname", "host": "h", "port": "80"}).tries == 1
    for query, message in (({"request": "x", "port": "80", "tries": "a"}, "tries parameter"),
                           ({"request": "x", "port": "80", "protocol": "sctp"}, "unsupported"),
                           ({"request": "x", "port": "http"}, "invalid port")):
        with pytest.raises(BadDial, match=message):
            parse_dial(query)
    # agnhost leaves "responses" out when the last try failed, even if an earlier one answered.
    assert dial_output(["a"], ["boom"], "") == '{"errors":["boom"]}'
    assert dial_output(["<a>"], [], "<a>") == '{"responses":["\\u003ca\\u003e"]}'
    assert resolv_values("nameserver 10.96.0.10\nsearch a b\n", "search") == ["a", "b"]
    assert resolv_values("", "search") is None


# ---- the other web images --------------------------------------------------------------

async def test_whoami_http_echo_echoserver_hello_app(net: Net) -> None:
    ctx, _ = container(net.server, "traefik/whoami", args=["--port", "8000"])
    start(net, ctx)
    await listening(net.server, 8000)
    text = (await http(net.client, SERVER_IP, 8000, "/x?y=1")).body.decode()
    assert text.startswith(f"Hostname: web-0\nIP: 127.0.0.1\nIP: {SERVER_IP}\nRemoteAddr: "
                           f"{CLIENT_IP}:")
    assert "GET /x?y=1 HTTP/1.1\r\nHost: " in text and "User-Agent: test/1\r\n" in text

    ctx, _ = container(net.other, "hashicorp/http-echo", args=["-text=hello world"])
    start(net, ctx)
    await listening(net.other, 5678)
    echo = await http(net.client, OTHER_IP, 5678)
    assert echo.body == b"hello world\n" and echo.headers["x-app-name"] == "http-echo"
    ctx, out = container(net.other, "hashicorp/http-echo")
    assert await start(net, ctx) == 127 and "Missing -text option!" in out.text

    ctx, _ = container(net.server, "registry.k8s.io/echoserver:1.10",
                       env={"POD_NAME": "web-0"})
    start(net, ctx)
    await listening(net.server, 8080)
    info = (await http(net.client, SERVER_IP, 8080, "/a?b=c")).body.decode()
    assert f"\tclient_address={CLIENT_IP}\n" in info and "\tquery=b=c\n" in info
    assert "\tpod name:\tweb-0\n" in info

    ctx, _ = container(net.other, "gcr.io/google-samples/hello-app:2.0", env={"PORT": "9000"})
    start(net, ctx)
    await listening(net.other, 9000)
    assert (await http(net.client, OTHER_IP, 9000)).body == (
        b"Hello, world!\nVersion: 2.0.0\nHostname: peer\n")


def test_web_images_pure_logic() -> None:
    assert version_of("1.0") == "1.0.0" and version_of("latest") == "1.0.0"
    text = whoami_text(name="", hostname="h", ips=["127.0.0.1"], remote="1.2.3.4:5",
                       method="GET", target="/", version="HTTP/1.1", host="h:80",
                       headers=[("accept", "*/*"), ("user-agent", "c"), ("Host", "h:80")])
    assert text == ("Hostname: h\nIP: 127.0.0.1\nRemoteAddr: 1.2.3.4:5\n"
                    "GET / HTTP/1.1\r\nHost: h:80\r\nUser-Agent: c\r\nAccept: */*\r\n\r\n")
    body = echo_text(hostname="h", env={}, client="1.2.3.4", method="GET", path="/",
                     query="", version="1.1", uri="http://h/", headers=[], body=b"")
    assert "-no pod information available-" in body and "-no body in request-" in body


# ---- exit codes ---------------------------------------------------------------------------

@pytest.mark.parametrize(("returned", "code"), [(None, 0), (3, 3), (256, 0), (-1, 255),
                                                ("oops", 0), (True, 0)])
async def test_a_coroutines_return_value_is_its_exit_code(net: Net, returned: object,
                                                          code: int) -> None:
    async def image(ctx: ContainerContext) -> Any:
        return returned

    ctx, _ = container(net.server, "x")
    assert await _run_image(image, ctx) == code


class _Reply(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.got: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if not self.got.done():
            self.got.set_result(data)


async def test_netexec_udp_server_and_http_override(net: Net) -> None:
    ctx, _ = container(net.server, "registry.k8s.io/e2e-test-images/agnhost:2.52",
                       args=["netexec", "--http-override=/echo?msg=fixed", "--udp-port", "9000"])
    start(net, ctx)
    await listening(net.server, 8080)
    assert (await http(net.client, SERVER_IP, 8080, "/hostname")).body == b"fixed"
    transport, proto = await net.client.create_datagram_endpoint(
        _Reply, remote_addr=(SERVER_IP, 9000))
    transport.sendto(b"hostname\n")
    assert await proto.got == b"web-0"
    transport.close()
    ctx, out = container(net.other, "registry.k8s.io/e2e-test-images/agnhost:2.52",
                         args=["netexec", "--sctp-port=9999"])
    assert await start(net, ctx) == 1 and "SCTP is not emulated" in out.text
