"""Toolbox commands run inside a real PodNet against listeners on the virtual network."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import pytest

from agents.netstack import NodeNetwork, PodNet
from agents.podfiles import hosts_file, resolv_conf
from agents.toolbox import COMMANDS, ExecTarget, run_command

CLIENT_IP, SERVER_IP, NOBODY_IP = "10.244.1.5", "10.244.1.6", "10.244.1.99"
HTTP_PORT, SILENT_PORT, CLOSED_PORT = 8080, 9090, 8081


@dataclass
class Result:
    code: int
    out: str
    err: str


async def _http_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A tiny HTTP/1.1 server; the path picks the response framing."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        request_line = head.split(b"\r\n", 1)[0].decode()
        _, path, _ = request_line.split(" ")
        length = re.search(rb"Content-Length: (\d+)", head)
        body = await reader.readexactly(int(length.group(1))) if length else b""
        if path == "/":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                         b"Content-Length: 6\r\n\r\nhello\n")
        elif path == "/chunked":
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                         b"4\r\nchun\r\n3\r\nked\r\n0\r\n\r\n")
        elif path == "/eof":
            writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end")
            writer.write_eof()
        elif path == "/echo":
            payload = head + body
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s"
                         % (len(payload), payload))
        elif path == "/moved":
            writer.write(b"HTTP/1.1 302 Found\r\nLocation: /\r\nContent-Length: 0\r\n\r\n")
        else:
            writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 10\r\n\r\nnot found\n")
        await writer.drain()
        await reader.read()  # keep-alive: the client closes
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


async def _silent_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Accepts and reads, never answers: the client's timeout has to end it."""
    try:
        while await reader.read(1024):
            pass
    except ConnectionError:
        pass
    finally:
        writer.close()


async def _resolver(name: str) -> Sequence[str]:
    """Stands in for cluster DNS (which arrives later): one Service name."""
    return [SERVER_IP] if name in ("web", "web.default.svc.cluster.local") else []


@pytest.fixture
async def node() -> AsyncIterator[NodeNetwork]:
    network = NodeNetwork("node-1", "10.244.1.0/24")
    yield network
    for pod in network.pods():
        network.detach(pod.ip)
    for _ in range(50):
        await asyncio.sleep(0)
    assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []


@pytest.fixture
async def server(node: NodeNetwork) -> AsyncIterator[PodNet]:
    net = node.attach(SERVER_IP, pod="web-0", namespace="default", hostname="web-0")
    http = await net.start_server(_http_server, None, HTTP_PORT)
    silent = await net.start_server(_silent_server, None, SILENT_PORT)
    yield net
    for listener in (http, silent):
        listener.close()


@pytest.fixture
def target(node: NodeNetwork, server: PodNet) -> ExecTarget:
    net = node.attach(CLIENT_IP, pod="client", namespace="default", hostname="client")
    net.resolver = _resolver
    spec: dict[str, object] = {}
    return ExecTarget(
        net=net, pod="client", namespace="default", node="node-1", pod_ip=CLIENT_IP,
        hostname="client",
        env={"PATH": "/usr/local/bin:/usr/bin:/bin", "HOSTNAME": "client", "GREETING": "hi there"},
        files={"/etc/hosts": hosts_file([CLIENT_IP], "client", None, "default", "cluster.local"),
               "/etc/resolv.conf": resolv_conf(spec, "default", "cluster.local"),
               "/etc/hostname": "client\n"},
        routes=[("default", "via 10.244.1.1 dev eth0"),
                ("10.244.1.0/24", f"dev eth0 proto kernel scope link src {CLIENT_IP}")],
    )


async def run(target: ExecTarget, *argv: str, stdin: bytes | None = None,
              tty: bool = False) -> Result:
    out, err = bytearray(), bytearray()
    reader = None
    if stdin is not None:
        reader = asyncio.StreamReader()
        reader.feed_data(stdin)
        reader.feed_eof()
    code = await run_command(target, list(argv), reader, out.extend, err.extend, tty=tty)
    return Result(code, out.decode(), err.decode())


# --- curl -------------------------------------------------------------------------------------

async def test_curl_prints_the_body(target: ExecTarget) -> None:
    result = await run(target, "curl", "-s", f"http://{SERVER_IP}:{HTTP_PORT}/")
    assert result == Result(0, "hello\n", "")


async def test_curl_without_s_shows_the_progress_meter(target: ExecTarget) -> None:
    result = await run(target, "curl", f"{SERVER_IP}:{HTTP_PORT}")  # no scheme: http
    assert result.out == "hello\n"
    lines = result.err.splitlines()
    assert lines[0].startswith("  % Total    % Received % Xferd")
    assert re.match(r"100     6  100     6    0     0 ", lines[2])


async def test_curl_meter_is_hidden_on_a_tty(target: ExecTarget) -> None:
    result = await run(target, "curl", f"http://{SERVER_IP}:{HTTP_PORT}/", tty=True)
    assert result == Result(0, "hello\n", "")


@pytest.mark.parametrize("path, body", [("/chunked", "chunked"), ("/eof", "until the end")])
async def test_curl_body_framings(target: ExecTarget, path: str, body: str) -> None:
    result = await run(target, "curl", "-sS", f"http://{SERVER_IP}:{HTTP_PORT}{path}")
    assert result == Result(0, body, "")


async def test_curl_verbose_shape(target: ExecTarget) -> None:
    result = await run(target, "/usr/bin/curl", "-sv", f"http://{SERVER_IP}:{HTTP_PORT}/")
    assert result.code == 0
    assert result.out == "hello\n"
    flow = re.search(r"^\* flow: (\S+)$", result.err, re.M)
    assert flow is not None     # the id `podnet logs --flow` takes
    assert result.err == (
        f"*   Trying {SERVER_IP}:{HTTP_PORT}...\n"
        f"* Connected to {SERVER_IP} ({SERVER_IP}) port {HTTP_PORT} (#0)\n"
        f"* flow: {flow.group(1)}\n"
        "> GET / HTTP/1.1\n"
        f"> Host: {SERVER_IP}:{HTTP_PORT}\n"
        "> User-Agent: curl/7.88.1\n"
        "> Accept: */*\n"
        "> \n"
        "< HTTP/1.1 200 OK\n"
        "< Content-Type: text/plain\n"
        "< Content-Length: 6\n"
        "< \n"
        f"* Connection #0 to host {SERVER_IP} left intact\n"
    )


async def test_curl_by_name_goes_through_the_resolver(target: ExecTarget) -> None:
    result = await run(target, "curl", "-sv", f"http://web:{HTTP_PORT}/")
    assert result.out == "hello\n"
    assert f"* Connected to web ({SERVER_IP}) port {HTTP_PORT} (#0)\n" in result.err
    assert f"> Host: web:{HTTP_PORT}\n" in result.err


async def test_curl_write_out(target: ExecTarget) -> None:
    url = f"http://{SERVER_IP}:{HTTP_PORT}/"
    result = await run(target, "curl", "-s", "-o", "/dev/null", "-w",
                       r"%{http_code} %{remote_ip}\n", url)
    assert result == Result(0, f"200 {SERVER_IP}\n", "")
    timed = await run(target, "curl", "-so/dev/null", "-w%{time_total}", url)
    assert re.fullmatch(r"\d+\.\d{6}", timed.out)


async def test_curl_output_file(target: ExecTarget) -> None:
    result = await run(target, "curl", "-s", "-o", "/tmp/page",
                       f"http://{SERVER_IP}:{HTTP_PORT}/")
    assert result == Result(0, "", "")
    assert target.files["/tmp/page"] == "hello\n"
    assert (await run(target, "cat", "/tmp/page")).out == "hello\n"


async def test_curl_refused(target: ExecTarget) -> None:
    result = await run(target, "curl", "-sS", "-w", "%{http_code}",
                       f"http://{SERVER_IP}:{CLOSED_PORT}/")
    assert result.code == 7
    assert result.out == "000"
    assert re.fullmatch(rf"curl: \(7\) Failed to connect to {SERVER_IP} port {CLOSED_PORT} "
                        r"after \d+ ms: Connection refused\n", result.err)


async def test_curl_no_route(target: ExecTarget) -> None:
    result = await run(target, "curl", f"http://{NOBODY_IP}/")
    assert result.code == 7
    assert result.err.startswith("  % Total")  # the meter, then the error
    assert re.search(rf"curl: \(7\) Failed to connect to {NOBODY_IP} port 80 after \d+ ms: "
                     r"No route to host\n$", result.err)


async def test_curl_silent_hides_errors(target: ExecTarget) -> None:
    result = await run(target, "curl", "-s", f"http://{NOBODY_IP}/")
    assert result == Result(7, "", "")


async def test_curl_unknown_host(target: ExecTarget) -> None:
    result = await run(target, "curl", "-sS", "http://nope.default.svc.cluster.local/")
    assert result == Result(6, "", "curl: (6) Could not resolve host: "
                                   "nope.default.svc.cluster.local\n")


async def test_curl_max_time_against_a_server_that_never_answers(target: ExecTarget) -> None:
    result = await run(target, "curl", "-sS", "-m", "0.2", f"http://{SERVER_IP}:{SILENT_PORT}/")
    assert result.code == 28
    assert re.fullmatch(r"curl: \(28\) Operation timed out after \d+ milliseconds with 0 bytes "
                        r"received\n", result.err)


@pytest.mark.parametrize("url, code, message", [
    ("http://web:99999/", 3, "curl: (3) URL rejected: Port number was not a decimal number "
                             "between 0 and 65535\n"),
    ("http:///nohost", 3, "curl: (3) URL rejected: No host part in the URL\n"),
    ("ftp://web/", 1, 'curl: (1) Protocol "ftp" not supported or disabled in libcurl\n'),
])
async def test_curl_bad_urls(target: ExecTarget, url: str, code: int, message: str) -> None:
    assert await run(target, "curl", "-sS", url) == Result(code, "", message)


async def test_curl_fail_flag(target: ExecTarget) -> None:
    url = f"http://{SERVER_IP}:{HTTP_PORT}/missing"
    assert (await run(target, "curl", "-s", url)) == Result(0, "not found\n", "")
    result = await run(target, "curl", "-sSf", url)
    assert result == Result(22, "", "curl: (22) The requested URL returned error: 404\n")


async def test_curl_post_with_headers(target: ExecTarget) -> None:
    result = await run(target, "curl", "-s", "-X", "PUT", "-H", "X-Test: yes", "-d", "a=1",
                       f"http://{SERVER_IP}:{HTTP_PORT}/echo")
    assert result.code == 0
    assert result.out.startswith("PUT /echo HTTP/1.1\r\n")
    assert "X-Test: yes\r\n" in result.out
    assert "Content-Type: application/x-www-form-urlencoded\r\n" in result.out
    assert result.out.endswith("\r\n\r\na=1")


async def test_curl_include_and_head(target: ExecTarget) -> None:
    url = f"http://{SERVER_IP}:{HTTP_PORT}/"
    included = await run(target, "curl", "-si", url)
    assert included.out == ("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                            "Content-Length: 6\r\n\r\nhello\n")
    head = await run(target, "curl", "-sI", url)
    assert head.out.startswith("HTTP/1.1 200 OK\r\n")
    assert "hello" not in head.out


async def test_curl_follows_redirects_with_L(target: ExecTarget) -> None:
    url = f"http://{SERVER_IP}:{HTTP_PORT}/moved"
    assert (await run(target, "curl", "-s", "-w", "%{http_code}", url)).out == "302"
    followed = await run(target, "curl", "-sL", "-w", " %{num_redirects}", url)
    assert followed == Result(0, "hello\n 1", "")


async def test_curl_command_line_errors(target: ExecTarget) -> None:
    assert await run(target, "curl") == Result(
        2, "", "curl: no URL specified!\n"
               "curl: try 'curl --help' or 'curl --manual' for more information\n")
    unknown = await run(target, "curl", "--bogus", "http://web/")
    assert (unknown.code, unknown.err.splitlines()[0]) == (2, "curl: option --bogus: is unknown")


# --- wget -------------------------------------------------------------------------------------

async def test_wget_to_stdout(target: ExecTarget) -> None:
    result = await run(target, "wget", "-qO-", f"http://{SERVER_IP}:{HTTP_PORT}/")
    assert result == Result(0, "hello\n", "")


async def test_wget_log_and_file(target: ExecTarget) -> None:
    result = await run(target, "wget", "-O", "/tmp/w", f"http://web:{HTTP_PORT}/")
    assert result.code == 0
    assert target.files["/tmp/w"] == "hello\n"
    lines = result.err.splitlines()
    assert re.fullmatch(rf"--[\d-]+ [\d:]+--  http://web:{HTTP_PORT}/", lines[0])
    assert lines[1:5] == [
        f"Resolving web (web)... {SERVER_IP}",
        f"Connecting to web (web)|{SERVER_IP}|:{HTTP_PORT}... connected.",
        "HTTP request sent, awaiting response... 200 OK",
        "Length: 6 [text/plain]",
    ]
    assert "Saving to: '/tmp/w'" in lines
    assert re.search(r" - '/tmp/w' saved \[6/6\]", result.err)


async def test_wget_default_name_never_overwrites(target: ExecTarget) -> None:
    url = f"http://{SERVER_IP}:{HTTP_PORT}/"
    assert (await run(target, "wget", "-q", url)).code == 0
    assert (await run(target, "wget", "-q", url)).code == 0
    assert target.files["/index.html"] == target.files["/index.html.1"] == "hello\n"


async def test_wget_failures(target: ExecTarget) -> None:
    refused = await run(target, "wget", "-O-", f"http://{SERVER_IP}:{CLOSED_PORT}/")
    assert refused.code == 4
    assert refused.err.endswith(f"Connecting to {SERVER_IP}:{CLOSED_PORT}... "
                                "failed: Connection refused.\n")
    missing = await run(target, "wget", "-O-", f"http://{SERVER_IP}:{HTTP_PORT}/missing")
    assert missing.code == 8
    assert re.search(r"ERROR 404: Not Found\.\n", missing.err)
    assert (await run(target, "wget", "-qO-", "http://nope/")) == Result(4, "", "")
    timed_out = await run(target, "wget", "-T", "0.2", "-O-",
                          f"http://{SERVER_IP}:{SILENT_PORT}/")
    assert timed_out.code == 4
    assert "Read error (Connection timed out) in headers." in timed_out.err


# --- nc ---------------------------------------------------------------------------------------

async def test_nc_zero_io(target: ExecTarget) -> None:
    assert await run(target, "nc", "-z", SERVER_IP, str(HTTP_PORT)) == Result(0, "", "")
    assert await run(target, "nc", "-zv", "-w", "1", "web", str(HTTP_PORT)) == Result(
        0, "", f"web ({SERVER_IP}:{HTTP_PORT}) open\n")
    assert await run(target, "nc", "-z", SERVER_IP, str(CLOSED_PORT)) == Result(1, "", "")
    assert await run(target, "nc", "-zv", SERVER_IP, str(CLOSED_PORT)) == Result(
        1, "", f"nc: {SERVER_IP} ({SERVER_IP}:{CLOSED_PORT}): Connection refused\n")
    assert await run(target, "nc", "-zv", NOBODY_IP, "80") == Result(
        1, "", f"nc: {NOBODY_IP} ({NOBODY_IP}:80): No route to host\n")
    assert await run(target, "nc", "-z", "nope", "80") == Result(1, "", "nc: bad address 'nope'\n")


async def test_nc_relays_stdin_and_the_answer(target: ExecTarget) -> None:
    request = b"GET / HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n"
    result = await run(target, "nc", SERVER_IP, str(HTTP_PORT), stdin=request)
    assert result.code == 0
    assert result.out.endswith("\r\n\r\nhello\n")


async def test_nc_listen_serves_one_connection(target: ExecTarget, server: PodNet) -> None:
    listening = asyncio.create_task(run(target, "nc", "-l", "-p", "7000"))
    for _ in range(100):  # until the listener exists
        if any(listener.port == 7000 for listener in target.net.listeners()):
            break
        await asyncio.sleep(0)
    reader, writer = await server.open_connection(CLIENT_IP, 7000)
    writer.write(b"ping\n")
    writer.write_eof()
    assert await reader.read() == b""  # nc had no stdin: it half-closed at once
    writer.close()
    assert await listening == Result(0, "ping\n", "")


# --- the rest ---------------------------------------------------------------------------------

async def test_hostname(target: ExecTarget) -> None:
    assert await run(target, "hostname") == Result(0, "client\n", "")
    assert await run(target, "hostname", "-i") == Result(0, f"{CLIENT_IP}\n", "")


async def test_ip_addr(target: ExecTarget) -> None:
    for argv in (["ip", "addr"], ["ip", "a"], ["ip", "address", "show"]):
        result = await run(target, *argv)
        assert result.code == 0
        assert result.out == (
            "1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue state UNKNOWN group default "
            "qlen 1000\n"
            "    link/loopback 00:00:00:00:00:00 brd 00:00:00:00:00:00\n"
            "    inet 127.0.0.1/8 scope host lo\n"
            "       valid_lft forever preferred_lft forever\n"
            "2: eth0: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP "
            "group default\n"
            "    link/ether 0a:58:0a:f4:01:05 brd ff:ff:ff:ff:ff:ff\n"
            f"    inet {CLIENT_IP}/24 brd 10.244.1.255 scope global eth0\n"
            "       valid_lft forever preferred_lft forever\n")
    assert await run(target, "ip", "addr", "show", "dev", "eth9") == Result(
        1, "", 'Device "eth9" does not exist.\n')


async def test_ip_route(target: ExecTarget) -> None:
    expected = Result(0, "default via 10.244.1.1 dev eth0 \n10.244.1.0/24 dev eth0 proto kernel "
                         f"scope link src {CLIENT_IP} \n", "")
    assert await run(target, "ip", "route") == expected
    assert await run(target, "ip", "r") == expected
    assert (await run(target, "ip", "link")).code == 255


async def test_cat(target: ExecTarget) -> None:
    result = await run(target, "cat", "/etc/resolv.conf")
    assert result == Result(0, "nameserver 10.96.0.10\nsearch default.svc.cluster.local "
                               "svc.cluster.local cluster.local\noptions ndots:5\n", "")
    assert (await run(target, "cat", "/etc/hosts")).out.endswith(f"{CLIENT_IP}\tclient\n")
    assert await run(target, "cat", "/etc/hostname", "/nope") == Result(
        1, "client\n", "cat: /nope: No such file or directory\n")
    assert await run(target, "cat", "/etc") == Result(1, "", "cat: /etc: Is a directory\n")
    assert await run(target, "cat", stdin=b"from stdin") == Result(0, "from stdin", "")


async def test_env_and_printenv(target: ExecTarget) -> None:
    result = await run(target, "env")
    assert "GREETING=hi there\n" in result.out
    assert await run(target, "printenv", "GREETING") == Result(0, "hi there\n", "")
    assert await run(target, "printenv", "NOPE") == Result(1, "", "")
    assert await run(target, "env", "X=1", "printenv", "X") == Result(0, "1\n", "")


async def test_echo_true_false_sleep(target: ExecTarget) -> None:
    assert await run(target, "echo", "hello", "world") == Result(0, "hello world\n", "")
    assert await run(target, "echo", "-n", "x") == Result(0, "x", "")
    assert await run(target, "echo", "-e", r"a\tb") == Result(0, "a\tb\n", "")
    assert (await run(target, "true")).code == 0
    assert (await run(target, "false")).code == 1
    assert await run(target, "sleep", "0") == Result(0, "", "")
    assert (await run(target, "sleep", "soon")).code == 1


async def test_unknown_command_is_127(target: ExecTarget) -> None:
    assert await run(target, "kubectl", "get", "pods") == Result(
        127, "", "sh: 1: kubectl: not found\n")
    assert (await run(target, "/opt/curl", "http://web/")).code == 127


async def test_sh_c_runs_simple_commands(target: ExecTarget) -> None:
    assert await run(target, "sh", "-c", "echo $GREETING '$GREETING'") == Result(
        0, "hi there $GREETING\n", "")
    assert await run(target, "/bin/sh", "-c", "exit 3") == Result(3, "", "")
    assert await run(target, "sh", "-c", "exec hostname -i") == Result(0, f"{CLIENT_IP}\n", "")
    assert await run(target, "sh", "-c", 'echo "unterminated') == Result(
        2, "", "sh: 1: Syntax error: Unterminated quoted string\n")
    assert await run(target, "sh", "-c", "echo a | cat") == Result(0, "a\n", "")
    assert await run(target, "sh", "-c", "nope") == Result(127, "", "sh: 1: nope: not found\n")


async def test_sh_reads_commands_from_stdin(target: ExecTarget) -> None:
    result = await run(target, "sh", stdin=b"hostname\necho done\nexit 4\necho never\n")
    assert result == Result(4, "client\ndone\n", "")


def test_every_command_is_registered() -> None:
    for name in ("curl", "wget", "nc", "hostname", "ip", "cat", "env", "printenv", "echo",
                 "true", "false", "sleep"):
        assert name in COMMANDS
