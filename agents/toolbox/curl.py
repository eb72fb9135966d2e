"""curl (7.88, Debian bookworm's): HTTP/1.1 over the pod's network stack.

Exit codes and messages are curl's: 3 bad URL, 6 could not resolve, 7 failed to connect,
22 HTTP error with -f, 28 timeout, 52 empty reply, 2 bad command line. `-s` hides the progress
meter and error messages, `-S` brings the messages back; `-w` is printed even after a failure
(so `-w '%{http_code}'` prints `000` when nothing answered).
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass, field

from agents.toolbox import curlfmt
from agents.toolbox.core import Command, Proc, abspath
from agents.toolbox.httpclient import (
    HttpError,
    Progress,
    UnsupportedScheme,
    Url,
    UrlError,
    build_request,
    has_body,
    parse_url,
    read_body,
    read_head,
)
from agents.toolbox.netutil import close_quietly, family_of, resolve, strerror
from podnet.addresses import hostport

USER_AGENT = "curl/7.88.1"
MAX_REDIRECTS = 50
TRY_HELP = "curl: try 'curl --help' or 'curl --manual' for more information\n"

_FLAGS = {"-s": "silent", "--silent": "silent", "-S": "show_error", "--show-error": "show_error",
          "-v": "verbose", "--verbose": "verbose", "-i": "include", "--include": "include",
          "-I": "head", "--head": "head", "-f": "fail", "--fail": "fail",
          "-L": "location", "--location": "location", "-k": None, "--insecure": None,
          "-4": "ipv4", "--ipv4": "ipv4", "-6": "ipv6", "--ipv6": "ipv6",
          "-g": None, "--globoff": None, "-N": None, "--no-buffer": None}
_WITH_VALUE = {"-o": "output", "--output": "output", "-w": "write_out", "--write-out": "write_out",
               "-X": "request", "--request": "request", "-H": "header", "--header": "header",
               "-d": "data", "--data": "data", "--data-raw": "data", "--data-binary": "data",
               "-m": "max_time", "--max-time": "max_time", "--connect-timeout": "connect_timeout",
               "-A": "user_agent", "--user-agent": "user_agent"}


class CurlError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class Options:
    urls: list[str] = field(default_factory=list)
    silent: bool = False
    show_error: bool = False
    verbose: bool = False
    include: bool = False
    ipv4: bool = False
    ipv6: bool = False
    head: bool = False
    fail: bool = False
    location: bool = False
    output: str | None = None
    write_out: str | None = None
    request: str | None = None
    headers: list[str] = field(default_factory=list)
    data: list[str] = field(default_factory=list)
    max_time_s: float | None = None
    connect_timeout_s: float | None = None
    user_agent: str = USER_AGENT


def _seconds(option: str, value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if seconds < 0:
        raise CurlError(2, f"option {option}: expected a proper numerical parameter")
    return seconds


def _set(opts: Options, option: str, name: str, value: str) -> None:
    if name == "header":
        opts.headers.append(value)
    elif name == "data":
        opts.data.append(value)
    elif name == "max_time":
        opts.max_time_s = _seconds(option, value)
    elif name == "connect_timeout":
        opts.connect_timeout_s = _seconds(option, value)
    else:
        setattr(opts, name, value)


def parse_args(args: list[str]) -> Options:
    """curl's command line: short flags combine (`-sS`, `-so/dev/null`), long ones take the
    next word; anything that is not an option is a URL. Raises CurlError(2, ...)."""
    opts = Options()
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg.startswith("--"):
            if arg in _FLAGS:
                if (flag := _FLAGS[arg]) is not None:
                    setattr(opts, flag, True)
            elif arg in _WITH_VALUE:
                if i >= len(args):
                    raise CurlError(2, f"option {arg}: requires parameter")
                _set(opts, arg, _WITH_VALUE[arg], args[i])
                i += 1
            else:
                raise CurlError(2, f"option {arg}: is unknown")
        elif arg.startswith("-") and len(arg) > 1:
            for pos in range(1, len(arg)):
                short = "-" + arg[pos]
                if short in _FLAGS:
                    if (flag := _FLAGS[short]) is not None:
                        setattr(opts, flag, True)
                    continue
                if short not in _WITH_VALUE:
                    raise CurlError(2, f"option {arg}: is unknown")
                value = arg[pos + 1:]
                if not value:
                    if i >= len(args):
                        raise CurlError(2, f"option {short}: requires parameter")
                    value = args[i]
                    i += 1
                _set(opts, short, _WITH_VALUE[short], value)
                break
        else:
            opts.urls.append(arg)
    return opts


class _Transfer:
    """One curl invocation's transfer of one URL, following redirects with -L."""

    def __init__(self, proc: Proc, opts: Options, info: curlfmt.TransferInfo) -> None:
        self.proc = proc
        self.opts = opts
        self.info = info
        self.connected = False
        self.progress = Progress()
        self.saved = bytearray()
        self.loop = asyncio.get_running_loop()
        self.started = self.loop.time()

    def elapsed_ms(self) -> int:
        return int((self.loop.time() - self.started) * 1000)

    def trace(self, line: str) -> None:
        if self.opts.verbose:
            self.proc.stderr.write(line + "\n")

    async def write_body(self, data: bytes) -> None:
        output = self.opts.output
        if output is None or output == "-":
            self.proc.stdout.write(data)
            await self.proc.drain()
        elif output != "/dev/null":
            self.saved += data

    def request_headers(self, url: Url, body: bytes) -> list[tuple[str, str]]:
        opts = self.opts
        headers = [("Host", url.authority), ("User-Agent", opts.user_agent), ("Accept", "*/*")]
        if opts.data:
            headers += [("Content-Length", str(len(body))),
                        ("Content-Type", "application/x-www-form-urlencoded")]
        for text in opts.headers:
            # curl: "Name: value" replaces its own header, "Name:" removes it, "Name;" sends
            # it empty.
            name, sep, value = text.partition(":")
            if not sep:
                name, sep, value = text.partition(";")
                if not sep:
                    continue
                value = ""
            elif not value.strip():
                headers = [h for h in headers if h[0].lower() != name.strip().lower()]
                continue
            headers = [h for h in headers if h[0].lower() != name.strip().lower()]
            headers.append((name.strip(), value.strip()))
        return headers

    def method(self) -> str:
        if self.opts.request:
            return self.opts.request
        if self.opts.head:
            return "HEAD"
        return "POST" if self.opts.data else "GET"

    def body(self) -> bytes:
        parts = []
        for item in self.opts.data:
            if item.startswith("@"):
                # curl strips newlines from a file given with -d, as it does for form data.
                text = self.proc.target.files.get(abspath(item[1:], self.proc.target.cwd), "")
                parts.append(text.replace("\r", "").replace("\n", ""))
            else:
                parts.append(item)
        return "&".join(parts).encode()

    async def connect(self, url: Url) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        net = self.proc.target.net
        try:
            ip = await resolve(net, url.host, url.port, family_of(self.opts.ipv4,
                                                                  self.opts.ipv6))
        except socket.gaierror:
            self.trace(f"* Could not resolve host: {url.host}")
            raise CurlError(6, f"Could not resolve host: {url.host}") from None
        self.info.remote_ip, self.info.remote_port = ip, url.port
        self.trace(f"*   Trying {hostport(ip, url.port)}...")
        try:
            async with asyncio.timeout(self.opts.connect_timeout_s):
                reader, writer = await net.open_connection(ip, url.port)
        except TimeoutError:
            raise CurlError(28, f"Connection timed out after {self.elapsed_ms()} milliseconds"
                            ) from None
        except OSError as e:
            reason = strerror(e)
            self.trace(f"* connect to {ip} port {url.port} failed: {reason}")
            message = (f"Failed to connect to {url.host} port {url.port} after "
                       f"{self.elapsed_ms()} ms: {reason}")
            self.trace(f"* {message}")
            raise CurlError(7, message) from None
        self.connected = True
        self.info.time_connect_s = self.loop.time() - self.started
        self.trace(f"* Connected to {url.host} ({ip}) port {url.port} (#0)")
        flow = writer.get_extra_info("flow")
        if flow:        # the id `podnet logs --flow` takes, to follow this request's path
            self.trace(f"* flow: {flow}")
        return reader, writer

    async def fetch(self, url: Url, method: str, body: bytes) -> str | None:
        """One request/response; returns the Location to follow, if any."""
        reader, writer = await self.connect(url)
        try:
            headers = self.request_headers(url, body)
            request = build_request(method, url, headers, body)
            for line in request.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n"):
                self.trace(f"> {line}")
            self.trace("> ")
            writer.write(request)
            await writer.drain()
            response = await read_head(reader)
            for line in response.head.decode("latin-1").splitlines():
                self.trace(f"< {line}")
            self.info.http_code = response.status
            self.info.content_type = response.header("content-type") or ""
            location = response.header("location")
            if self.opts.location and location and response.status in (301, 302, 303, 307, 308):
                self.trace(f"* Ignoring the response-body\n* Connection #0 to host {url.host} "
                           f"left intact\n* Issue another request to this URL: '{location}'")
                return location
            if self.opts.fail and response.status >= 400:
                self.trace(f"* The requested URL returned error: {response.status}")
                raise CurlError(22, f"The requested URL returned error: {response.status}")
            if self.opts.include or self.opts.head:
                await self.write_body(response.head)
            if has_body(method, response.status):
                self.progress = Progress()
                await read_body(reader, response, self.write_body, self.progress)
            self.trace(f"* Connection #0 to host {url.host} left intact")
            return None
        except HttpError as e:
            raise CurlError(e.code, e.message) from None
        except OSError as e:
            # The peer reset the stream mid-transfer.
            raise CurlError(56, f"Recv failure: {strerror(e)}") from None
        finally:
            await close_quietly(writer)

    async def run(self, url: Url) -> None:
        method, body = self.method(), self.body()
        self.info.method = method
        for _ in range(MAX_REDIRECTS + 1):
            self.info.url = str(url)
            location = await self.fetch(url, method, body)
            if location is None:
                return
            self.info.num_redirects += 1
            try:
                url = parse_url(location if "://" in location
                                else f"{url.scheme}://{url.authority}{location}")
            except (UrlError, UnsupportedScheme):
                raise CurlError(3, "URL using bad/illegal format or missing URL") from None
            if self.info.http_code == 303 or (
                    self.info.http_code in (301, 302) and method == "POST"):
                method, body = "GET", b""
        raise CurlError(47, f"Maximum ({MAX_REDIRECTS}) redirects followed")

    def timeout_error(self) -> CurlError:
        if not self.connected:
            return CurlError(28, f"Connection timed out after {self.elapsed_ms()} milliseconds")
        got = self.progress.received
        expected = self.progress.expected
        amount = f"{got} out of {expected}" if expected is not None else str(got)
        return CurlError(28, f"Operation timed out after {self.elapsed_ms()} milliseconds with "
                             f"{amount} bytes received")


def _parse_url(text: str) -> Url:
    try:
        return parse_url(text)
    except UrlError as e:
        raise CurlError(3, f"URL rejected: {e}") from None
    except UnsupportedScheme as e:
        raise CurlError(1, f'Protocol "{e.scheme}" not supported or disabled in libcurl'
                        ) from None


async def _one(proc: Proc, opts: Options, url_text: str) -> int:
    info = curlfmt.TransferInfo(url=url_text)
    transfer = _Transfer(proc, opts, info)
    meter = not opts.silent and not (proc.tty and opts.output in (None, "-"))
    if meter:
        proc.stderr.write(curlfmt.METER_HEADER)
    code = 0
    try:
        url = _parse_url(url_text)
        info.url = str(url)
        async with asyncio.timeout(opts.max_time_s):
            await transfer.run(url)
    except TimeoutError:
        error: CurlError | None = transfer.timeout_error()
    except CurlError as e:
        error = e
    else:
        error = None
    info.time_total_s = transfer.loop.time() - transfer.started
    info.size_download = transfer.progress.received
    info.size_expected = transfer.progress.expected
    if meter:
        proc.stderr.write(curlfmt.meter_line(info))
    if error is not None:
        code = error.code
        if error.code == 28:
            transfer.trace(f"* {error.message}")
        transfer.trace("* Closing connection 0")
        if not opts.silent or opts.show_error:
            proc.stderr.write(f"curl: ({error.code}) {error.message}\n")
    elif opts.output is not None and opts.output not in ("-", "/dev/null"):
        path = abspath(opts.output, proc.target.cwd)
        proc.target.files[path] = transfer.saved.decode("utf-8", "replace")
    info.exitcode = code
    if opts.write_out is not None:
        text, warnings = curlfmt.write_out(opts.write_out, info)
        for warning in warnings:
            proc.stderr.write(warning)
        proc.stdout.write(text)
    return code


async def curl(proc: Proc, argv: list[str]) -> int:
    try:
        opts = parse_args(argv[1:])
        if not opts.urls:
            raise CurlError(2, "no URL specified!")
    except CurlError as e:
        proc.stderr.write(f"curl: {e.message}\n{TRY_HELP}")
        return e.code
    code = 0
    for url_text in opts.urls:
        code = await _one(proc, opts, url_text) or code
    return code


COMMANDS: dict[str, Command] = {"curl": curl}
