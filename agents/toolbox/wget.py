"""GNU wget (1.21): `wget -qO- URL`, `-O FILE`, `-T SECS`, `--spider`, over the pod's network.

Exit codes are GNU wget's: 1 generic (bad URL), 2 command line, 4 network failure (resolve,
connect, read error, timeout), 8 the server answered with an error status. The log goes to
stderr unless `-q`. Unlike GNU wget, a failed attempt is not retried (as with `-t 1`): retrying
20 times would only hide what the emulated network did.
"""

from __future__ import annotations

import asyncio
import posixpath
import socket
import time
from dataclasses import dataclass, field

from agents.toolbox.core import Command, Proc, abspath
from agents.toolbox.httpclient import (
    HttpError,
    Progress,
    Response,
    UnsupportedScheme,
    Url,
    UrlError,
    build_request,
    has_body,
    parse_url,
    read_body,
    read_head,
)
from agents.toolbox.netutil import close_quietly, is_ip_literal, resolve, strerror

USER_AGENT = "Wget/1.21.3"
MAX_REDIRECTS = 20
USAGE = "Usage: wget [OPTION]... [URL]...\n\nTry `wget --help' for more options.\n"


class WgetError(Exception):
    def __init__(self, code: int, message: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class Options:
    urls: list[str] = field(default_factory=list)
    quiet: bool = False
    spider: bool = False
    server_response: bool = False
    output: str | None = None
    timeout_s: float | None = None
    user_agent: str = USER_AGENT
    headers: list[str] = field(default_factory=list)


_FLAGS = {"q": "quiet", "S": "server_response"}
_LONG_FLAGS = {"quiet": "quiet", "spider": "spider", "server-response": "server_response"}
_VALUES = {"O": "output", "T": "timeout", "t": "tries", "U": "user_agent"}
_LONG_VALUES = {"output-document": "output", "timeout": "timeout", "tries": "tries",
                "user-agent": "user_agent", "header": "header", "read-timeout": "timeout",
                "connect-timeout": "timeout"}


def _set(opts: Options, name: str, value: str) -> None:
    if name == "timeout":
        try:
            opts.timeout_s = float(value)
        except ValueError:
            raise WgetError(2, f"wget: --timeout: Invalid time period '{value}'\n") from None
        if opts.timeout_s == 0:
            opts.timeout_s = None  # GNU wget: 0 turns the timeout off
    elif name == "header":
        opts.headers.append(value)
    elif name == "output":
        opts.output = value
    elif name == "user_agent":
        opts.user_agent = value
    # "tries" is accepted and ignored: there is always exactly one try.


def parse_args(args: list[str]) -> Options:
    """getopt_long rules: `-qO-`, `-O FILE`, `--timeout=5` or `--timeout 5`."""
    opts = Options()
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg.startswith("--") and len(arg) > 2:
            name, eq, value = arg[2:].partition("=")
            if name in _LONG_FLAGS:
                setattr(opts, _LONG_FLAGS[name], True)
            elif name in _LONG_VALUES:
                if not eq:
                    if i >= len(args):
                        raise WgetError(2, f"wget: option '--{name}' requires an argument\n")
                    value = args[i]
                    i += 1
                _set(opts, _LONG_VALUES[name], value)
            else:
                raise WgetError(2, f"wget: unrecognized option '{arg}'\n")
        elif arg.startswith("-") and len(arg) > 1:
            for pos in range(1, len(arg)):
                letter = arg[pos]
                if letter in _FLAGS:
                    setattr(opts, _FLAGS[letter], True)
                    continue
                if letter not in _VALUES:
                    raise WgetError(2, f"wget: invalid option -- '{letter}'\n")
                value = arg[pos + 1:]
                if not value:
                    if i >= len(args):
                        raise WgetError(2, f"wget: option requires an argument -- '{letter}'\n")
                    value = args[i]
                    i += 1
                _set(opts, _VALUES[letter], value)
                break
        else:
            opts.urls.append(arg)
    return opts


def _stamp() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")


def _speed(size: int, seconds: float) -> str:
    rate = size / seconds if seconds > 0 else float(size) * 1000
    for unit in ("B/s", "KB/s", "MB/s", "GB/s"):
        if rate < 1024 or unit == "GB/s":
            return f"{rate:.0f} {unit}" if unit == "B/s" else f"{rate:.2f} {unit}"
        rate /= 1024
    raise AssertionError("unreachable")


class _Download:
    def __init__(self, proc: Proc, opts: Options) -> None:
        self.proc = proc
        self.opts = opts
        self.saved = bytearray()
        self.progress = Progress()
        self.to_stdout = opts.output == "-"
        self.loop = asyncio.get_running_loop()
        self.timer: asyncio.Timeout | None = None

    def log(self, text: str) -> None:
        if not self.opts.quiet:
            self.proc.stderr.write(text)

    def rearm(self) -> None:
        """-T is an idle timeout: every chunk that arrives restarts it."""
        if self.timer is not None and self.opts.timeout_s is not None:
            self.timer.reschedule(self.loop.time() + self.opts.timeout_s)

    async def sink(self, data: bytes) -> None:
        self.rearm()
        if self.to_stdout:
            self.proc.stdout.write(data)
            await self.proc.drain()
        else:
            self.saved += data

    def target_name(self, url: Url) -> str:
        if self.opts.output is not None:
            return self.opts.output
        name = posixpath.basename(url.target.split("?")[0]) or "index.html"
        files = self.proc.target.files
        # GNU wget never overwrites: it picks name.1, name.2, ...
        candidate, n = name, 0
        while abspath(candidate, self.proc.target.cwd) in files:
            n += 1
            candidate = f"{name}.{n}"
        return candidate

    async def connect(self, url: Url) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        net = self.proc.target.net
        if is_ip_literal(url.host):
            ip = url.host
            self.log(f"Connecting to {ip}:{url.port}... ")
        else:
            self.log(f"Resolving {url.host} ({url.host})... ")
            try:
                ip = await resolve(net, url.host, url.port)
            except socket.gaierror:
                self.log("failed: Name or service not known.\n")
                raise WgetError(4, f"wget: unable to resolve host address '{url.host}'\n"
                                ) from None
            self.log(f"{ip}\nConnecting to {url.host} ({url.host})|{ip}|:{url.port}... ")
        try:
            async with asyncio.timeout(self.opts.timeout_s):
                streams = await net.open_connection(ip, url.port)
        except (OSError, TimeoutError) as e:
            self.log(f"failed: {strerror(e)}.\n")
            raise WgetError(4) from None
        self.log("connected.\n")
        return streams

    async def fetch(self, url: Url) -> str | None:
        """One request; returns a Location to follow, if any."""
        reader, writer = await self.connect(url)
        method = "HEAD" if self.opts.spider else "GET"
        headers = [("User-Agent", self.opts.user_agent), ("Accept", "*/*"),
                   ("Accept-Encoding", "identity"), ("Host", url.authority),
                   ("Connection", "Keep-Alive")]
        for text in self.opts.headers:
            name, _, value = text.partition(":")
            headers = [h for h in headers if h[0].lower() != name.strip().lower()]
            headers.append((name.strip(), value.strip()))
        try:
            writer.write(build_request(method, url, headers, b""))
            await writer.drain()
            self.log("HTTP request sent, awaiting response... ")
            try:
                async with asyncio.timeout(self.opts.timeout_s) as self.timer:
                    response = await read_head(reader)
            except TimeoutError:
                self.log("Read error (Connection timed out) in headers.\nGiving up.\n\n")
                raise WgetError(4) from None
            except (HttpError, OSError):
                self.log("No data received.\nGiving up.\n\n")
                raise WgetError(4) from None
            if self.opts.server_response:
                self.log("\n" + "".join(f"  {line}\n" for line in
                                        response.head.decode("latin-1").splitlines() if line))
            else:
                self.log(f"{response.status} {response.reason}\n")
            location = response.header("location")
            if response.status in (301, 302, 303, 307, 308) and location:
                self.log(f"Location: {location} [following]\n")
                return location
            if response.status >= 400:
                self.log(f"{_stamp()} ERROR {response.status}: {response.reason}.\n\n")
                raise WgetError(8)
            await self.save(url, reader, response, method)
            return None
        finally:
            await close_quietly(writer)

    async def save(self, url: Url, reader: asyncio.StreamReader,
                   response: Response, method: str) -> None:
        length = response.content_length
        kind = response.header("content-type")
        size_text = "unspecified" if length is None or response.chunked else str(length)
        self.log(f"Length: {size_text}" + (f" [{kind}]" if kind else "") + "\n")
        if self.opts.spider:
            self.log("Remote file exists.\n\n")
            return
        name = self.target_name(url)
        self.to_stdout = name == "-"
        self.log(f"Saving to: '{'STDOUT' if self.to_stdout else name}'\n\n")
        started = self.loop.time()
        if has_body(method, response.status):
            try:
                async with asyncio.timeout(self.opts.timeout_s) as self.timer:
                    await read_body(reader, response, self.sink, self.progress)
            except TimeoutError:
                self.log(f"Read error at byte {self.progress.received} (Connection timed out)."
                         "Giving up.\n\n")
                raise WgetError(4) from None
            except (HttpError, OSError) as e:
                self.log(f"Read error at byte {self.progress.received} ({e}).Giving up.\n\n")
                raise WgetError(4) from None
        got = self.progress.received
        total = f"{got}/{length}" if length is not None else str(got)
        speed = _speed(got, self.loop.time() - started)
        if self.to_stdout:
            self.log(f"{_stamp()} ({speed}) - written to stdout [{total}]\n\n")
        else:
            path = abspath(name, self.proc.target.cwd)
            self.proc.target.files[path] = self.saved.decode("utf-8", "replace")
            self.log(f"{_stamp()} ({speed}) - '{name}' saved [{total}]\n\n")

    async def run(self, text: str) -> None:
        try:
            url = parse_url(text)
        except UrlError:
            raise WgetError(1, f"{text}: Invalid host name.\n") from None
        except UnsupportedScheme:
            raise WgetError(1, f"{text}: Unsupported scheme.\n") from None
        for _ in range(MAX_REDIRECTS + 1):
            self.log(f"--{_stamp()}--  {url}\n")
            location = await self.fetch(url)
            if location is None:
                return
            try:
                url = parse_url(location if "://" in location
                                else f"{url.scheme}://{url.authority}{location}")
            except (UrlError, UnsupportedScheme):
                raise WgetError(1, f"{location}: Invalid URL.\n") from None
        raise WgetError(1, f"{MAX_REDIRECTS} redirections exceeded.\n")


async def wget(proc: Proc, argv: list[str]) -> int:
    try:
        opts = parse_args(argv[1:])
        if not opts.urls:
            raise WgetError(1, "wget: missing URL\n")
    except WgetError as e:
        proc.stderr.write(e.message + USAGE)
        return e.code
    code = 0
    for text in opts.urls:
        try:
            await _Download(proc, opts).run(text)
        except WgetError as e:
            if e.message and not (opts.quiet and e.code == 4):
                proc.stderr.write(e.message)
            code = e.code
    return code


COMMANDS: dict[str, Command] = {"wget": wget}
