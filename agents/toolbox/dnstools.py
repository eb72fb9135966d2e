"""`nslookup` and `dig` (BIND 9.18) through the pod's network stack and its resolv.conf.

Both ask the pod's nameserver (resolv.conf's first, or the one given) over the emulated
network, with the pod's search list and ndots where the real tools use them:

    nslookup [-type=T] NAME [SERVER]
    dig [@SERVER] [-p PORT] [-x IP] NAME [TYPE] [+short] [+search] [+tcp] [+time=S] [+tries=N]

Output is the real tools' text: nslookup's `Server:`/`Address:` header, `Name:`/`Address:`
pairs and `** server can't find NAME: NXDOMAIN` (exit 1); dig's header, flags, sections in
BIND's column layout, `;; Query time`, `;; SERVER: ip#53(ip) (UDP)`; `+short` prints only the
data. dig exits 0 whenever a reply came (NXDOMAIN included), 9 when none did, 1 on usage errors.
"""

from __future__ import annotations

import ipaddress
import time
from dataclasses import dataclass, field

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.reversename
import dns.rrset

from agents.resolver import (
    DNS_PORT,
    Exchange,
    NoReply,
    ResolvConf,
    candidates,
    exchange,
    parse_resolv_conf,
)
from agents.toolbox.core import Command, Proc

DIG_VERSION = "9.18.24"
DIG_EDNS_PAYLOAD = 1232   # what dig 9.18 advertises
FLAG_ORDER = (("qr", dns.flags.QR), ("aa", dns.flags.AA), ("tc", dns.flags.TC),
              ("rd", dns.flags.RD), ("ra", dns.flags.RA), ("ad", dns.flags.AD),
              ("cd", dns.flags.CD))


def _conf(proc: Proc) -> ResolvConf:
    return parse_resolv_conf(proc.target.files.get("/etc/resolv.conf", ""))


def _rdtype(text: str) -> dns.rdatatype.RdataType | None:
    try:
        value = dns.rdatatype.from_text(text.upper())
    except dns.rdatatype.UnknownRdatatype:
        return None
    return value


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


# ------------------------------------------------------------------------------ nslookup


async def nslookup(proc: Proc, argv: list[str]) -> int:
    qtype: dns.rdatatype.RdataType | None = None
    positional: list[str] = []
    for arg in argv[1:]:
        if arg.startswith("-") and "=" in arg:
            key, _, value = arg[1:].partition("=")
            if key in ("type", "query", "querytype", "q", "ty"):
                qtype = _rdtype(value)
                if qtype is None:
                    proc.stderr.write(f"unknown query type: {value}\n")
                    return 1
            continue
        positional.append(arg)
    if not positional:
        proc.stderr.write("Usage: nslookup [-type=TYPE] NAME [SERVER]\n")
        return 1
    name = positional[0]
    conf = _conf(proc)
    server = positional[1] if len(positional) > 1 else conf.nameservers[0]
    if not _is_ip(server):
        try:
            server = (await proc.target.net.getaddrinfo(server, DNS_PORT))[0][4][0]
        except OSError:
            proc.stderr.write(f"nslookup: couldn't get address for '{server}': not found\n")
            return 1
    if _is_ip(name) and qtype is None:
        names, qtypes = [dns.reversename.from_address(name).to_text()], [dns.rdatatype.PTR]
    else:
        names = candidates(name, conf)
        qtypes = [qtype] if qtype is not None else [dns.rdatatype.A, dns.rdatatype.AAAA]
    header = f"Server:\t\t{server}\nAddress:\t{server}#{DNS_PORT}\n\n"
    for fqdn in names:
        try:
            first = await _ask(proc, server, fqdn, qtypes[0], conf)
        except (NoReply, dns.exception.DNSException):
            proc.stdout.write(";; connection timed out; no servers could be reached\n\n")
            return 1
        rcode = first.response.rcode()
        if rcode == dns.rcode.NXDOMAIN:
            continue
        if rcode != dns.rcode.NOERROR:
            proc.stdout.write(f"{header}** server can't find {name}: "
                              f"{dns.rcode.to_text(rcode)}\n\n")
            return 1
        proc.stdout.write(header)
        if not first.response.flags & dns.flags.AA:
            proc.stdout.write("Non-authoritative answer:\n")
        lines = _nslookup_lines(first.response)
        for more in qtypes[1:]:
            try:
                extra = await _ask(proc, server, fqdn, more, conf)
            except (NoReply, dns.exception.DNSException):
                continue
            lines += _nslookup_lines(extra.response)
        if not lines:
            proc.stdout.write(f"*** Can't find {name}: No answer\n\n")
            return 0
        proc.stdout.write("".join(lines) + "\n")
        return 0
    proc.stdout.write(f"{header}** server can't find {name}: NXDOMAIN\n\n")
    return 1


async def _ask(proc: Proc, server: str, fqdn: str, qtype: dns.rdatatype.RdataType,
               conf: ResolvConf) -> Exchange:
    query = dns.message.make_query(fqdn, qtype)
    return await exchange(proc.target.net, server, query, timeout_s=conf.timeout_s,
                          tries=conf.attempts)


def _nslookup_lines(response: dns.message.Message) -> list[str]:
    lines = []
    for rrset in response.answer:
        owner = rrset.name.to_text(omit_final_dot=True)
        for rd in rrset:
            text = rd.to_text()
            if rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
                lines.append(f"Name:\t{owner}\nAddress: {text}\n")
            elif rrset.rdtype == dns.rdatatype.CNAME:
                lines.append(f"{owner}\tcanonical name = {text}\n")
            elif rrset.rdtype == dns.rdatatype.PTR:
                lines.append(f"{owner}\tname = {text}\n")
            elif rrset.rdtype == dns.rdatatype.SRV:
                lines.append(f"{owner}\tservice = {text}\n")
            elif rrset.rdtype == dns.rdatatype.TXT:
                lines.append(f"{owner}\ttext = {text}\n")
            elif rrset.rdtype == dns.rdatatype.NS:
                lines.append(f"{owner}\tnameserver = {text}\n")
            elif rrset.rdtype == dns.rdatatype.SOA:
                soa = text.split()
                lines.append(f"{owner}\n\torigin = {soa[0]}\n\tmail addr = {soa[1]}\n"
                             f"\tserial = {soa[2]}\n\trefresh = {soa[3]}\n\tretry = {soa[4]}\n"
                             f"\texpire = {soa[5]}\n\tminimum = {soa[6]}\n")
            else:
                lines.append(f"{owner}\trdata_{int(rrset.rdtype)} = {text}\n")
    return lines


# ------------------------------------------------------------------------------ dig


class _Usage(Exception):
    pass


@dataclass
class DigOptions:
    server: str | None = None
    port: int = DNS_PORT
    name: str | None = None
    qtype: dns.rdatatype.RdataType | None = None
    short: bool = False
    search: bool = False
    tcp: bool = False
    time_s: int = 5
    tries: int = 3
    recurse: bool = True
    edns: bool = True
    args: list[str] = field(default_factory=list)


def parse_dig(args: list[str]) -> DigOptions:
    opts = DigOptions(args=args)
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg.startswith("@"):
            opts.server = arg[1:]
        elif arg.startswith("+"):
            _plus_option(opts, arg[1:])
        elif arg in ("-x", "-p", "-t"):
            if i >= len(args):
                raise _Usage(f"dig: option requires an argument -- '{arg[1:]}'")
            value = args[i]
            i += 1
            if arg == "-x":
                try:
                    opts.name = dns.reversename.from_address(value).to_text()
                except (dns.exception.SyntaxError, ValueError):
                    raise _Usage(f"Invalid IP address {value}") from None
                opts.qtype = opts.qtype or dns.rdatatype.PTR
            elif arg == "-p":
                if not value.isdigit() or not 0 < int(value) < 65536:
                    raise _Usage(f"port number out of range: {value}")
                opts.port = int(value)
            else:
                opts.qtype = _rdtype(value)
                if opts.qtype is None:
                    raise _Usage(f"Invalid type: {value}")
        elif arg in ("-4", "-6"):
            continue
        elif arg.startswith("-"):
            raise _Usage(f"Invalid option: {arg}")
        elif arg.upper() == "IN":
            continue
        elif opts.qtype is None and _rdtype(arg) is not None:
            # dig's rule: a word that names a type is the type, before or after the name
            # (`dig AAAA web`, `dig web AAAA`).
            opts.qtype = _rdtype(arg)
        elif opts.name is None:
            opts.name = arg
        elif _rdtype(arg) is not None:
            opts.qtype = _rdtype(arg)
        else:
            raise _Usage(f"dig: '{arg}' is not a legal name or type (only one name per run)")
    return opts


def _plus_option(opts: DigOptions, option: str) -> None:
    key, _, value = option.partition("=")
    negate = key.startswith("no")
    base = key[2:] if negate else key
    flags = {"short": "short", "search": "search", "tcp": "tcp", "vc": "tcp",
             "recurse": "recurse", "edns": "edns"}
    if base in flags:
        setattr(opts, flags[base], not negate)
    elif base == "notcp":
        opts.tcp = False
    elif base in ("time", "tries", "retry") and value.isdigit():
        if base == "time":
            opts.time_s = max(1, int(value))
        else:
            opts.tries = max(1, int(value) + (1 if base == "retry" else 0))
    elif base in ("cmd", "comments", "stats", "question", "answer", "authority",
                  "additional", "all", "cookie", "nsid", "identify", "ttlid"):
        return  # accepted for compatibility; the default output already has these
    else:
        raise _Usage(f"Invalid option: +{option}")


async def dig(proc: Proc, argv: list[str]) -> int:
    try:
        opts = parse_dig(argv[1:])
    except _Usage as e:
        proc.stderr.write(f"{e}\nUsage:  dig [@global-server] [domain] [q-type] [q-class] "
                          "{q-opt}\n")
        return 1
    conf = _conf(proc)
    server = opts.server or conf.nameservers[0]
    if not _is_ip(server):
        try:
            server = (await proc.target.net.getaddrinfo(server, opts.port))[0][4][0]
        except OSError:
            proc.stderr.write(f"dig: couldn't get address for '{server}': not found\n")
            return 10
    name = opts.name or "."
    qtype = opts.qtype or (dns.rdatatype.NS if opts.name is None else dns.rdatatype.A)
    names = candidates(name, conf) if opts.search and not name.endswith(".") else [
        name if name.endswith(".") else name + "."]
    banner = (f"\n; <<>> DiG {DIG_VERSION} <<>> {' '.join(opts.args)}\n"
              + ("; (1 server found)\n" if opts.server else "") + ";; global options: +cmd\n")
    result: Exchange | None = None
    for fqdn in names:
        try:
            query = dns.message.make_query(
                fqdn, qtype, use_edns=0 if opts.edns else -1, payload=DIG_EDNS_PAYLOAD)
        except dns.exception.DNSException as e:
            proc.stderr.write(f"dig: '{name}' is not a legal name ({e})\n")
            return 10
        if not opts.recurse:
            query.flags &= ~dns.flags.RD
        result = await _dig_exchange(proc, opts, server, query)
        if result is None:
            if not opts.short:
                proc.stdout.write(banner)
            proc.stdout.write(";; no servers could be reached\n")
            return 9
        # dig +search goes on to the next candidate on NXDOMAIN (and SERVFAIL), like a stub.
        if result.response.rcode() not in (dns.rcode.NXDOMAIN, dns.rcode.SERVFAIL):
            break
    assert result is not None
    if opts.short:
        for rrset in result.response.answer:
            for rd in rrset:
                proc.stdout.write(rd.to_text() + "\n")
        return 0
    proc.stdout.write(banner + ";; Got answer:\n" + format_message(result.response))
    proc.stdout.write(
        f";; Query time: {int(result.elapsed_s * 1000)} msec\n"
        f";; SERVER: {server}#{opts.port}({server}) ({result.transport.upper()})\n"
        f";; WHEN: {time.strftime('%a %b %d %H:%M:%S UTC %Y', time.gmtime())}\n"
        f";; MSG SIZE  rcvd: {result.size}\n\n")
    return 0


async def _dig_exchange(proc: Proc, opts: DigOptions, server: str,
                        query: dns.message.Message) -> Exchange | None:
    """dig's retries: one line per failed try; a truncated UDP reply is retried over TCP."""
    tcp = opts.tcp
    tries = opts.tries
    while tries > 0:
        tries -= 1
        try:
            result = await exchange(proc.target.net, server, query, port=opts.port, tcp=tcp,
                                    timeout_s=opts.time_s, tries=1, tc_fallback=False)
        except NoReply as e:
            reason = "timed out" if "timed out" in str(e) or not str(e) else str(e)
            if "refused" in str(e).lower():
                reason = "connection refused"
            proc.stdout.write(f";; communications error to {server}#{opts.port}: {reason}\n")
            continue
        if result.response.flags & dns.flags.TC and not tcp:
            if not opts.short:
                proc.stdout.write(";; Truncated, retrying in TCP mode.\n")
            tcp, tries = True, max(tries, 1)
            continue
        return result
    return None


def _pad(line: str, column: int) -> str:
    """BIND's column layout: tabs up to `column`, or one space when already past it."""
    width = len(line.expandtabs(8))
    if width >= column:
        return line + " "
    while width < column:
        line += "\t"
        width = (width // 8 + 1) * 8
    return line


def _rr_lines(rrset: dns.rrset.RRset) -> list[str]:
    out = []
    owner = rrset.name.to_text()
    for rd in rrset:
        line = _pad(owner, 24) + str(rrset.ttl)
        line = _pad(line, 32) + dns.rdataclass.to_text(rrset.rdclass)
        line = _pad(line, 40) + dns.rdatatype.to_text(rrset.rdtype)
        out.append(_pad(line, 48) + rd.to_text())
    return out


def format_message(response: dns.message.Message) -> str:
    """A reply as dig prints it, from `->>HEADER<<-` to the last section."""
    flags = " ".join(text for text, bit in FLAG_ORDER if response.flags & bit)
    additional = sum(len(r) for r in response.additional) + (1 if response.edns >= 0 else 0)
    out = [f";; ->>HEADER<<- opcode: {dns.opcode.to_text(response.opcode())}, status: "
           f"{dns.rcode.to_text(response.rcode())}, id: {response.id}",
           f";; flags: {flags}; QUERY: {len(response.question)}, ANSWER: "
           f"{sum(len(r) for r in response.answer)}, AUTHORITY: "
           f"{sum(len(r) for r in response.authority)}, ADDITIONAL: {additional}"]
    if response.flags & dns.flags.RD and not response.flags & dns.flags.RA:
        out.append(";; WARNING: recursion requested but not available")
    out.append("")
    if response.edns >= 0:
        out += [";; OPT PSEUDOSECTION:",
                f"; EDNS: version: {response.edns}, flags:; udp: {response.payload}"]
        for option in response.options:
            if isinstance(option, dns.edns.EDEOption):
                text = f": ({option.text})" if option.text else ""
                out.append(f"; EDE: {int(option.code)} ({_ede_name(option.code)}){text}")
    out.append(";; QUESTION SECTION:")
    for q in response.question:
        line = _pad(";" + q.name.to_text(), 32) + dns.rdataclass.to_text(q.rdclass)
        out.append(_pad(line, 40) + dns.rdatatype.to_text(q.rdtype))
    out.append("")
    for title, section in (("ANSWER", response.answer), ("AUTHORITY", response.authority),
                           ("ADDITIONAL", response.additional)):
        if section:
            out.append(f";; {title} SECTION:")
            for rrset in section:
                out += _rr_lines(rrset)
            out.append("")
    return "\n".join(out) + "\n"


def _ede_name(code: int) -> str:
    try:
        return dns.edns.EDECode(code).name.replace("_", " ").title()
    except ValueError:
        return "Unknown"


COMMANDS: dict[str, Command] = {"nslookup": nslookup, "dig": dig}
