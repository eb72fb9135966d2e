"""Small file and clock commands on the virtual filesystem: date, touch, rm, mkdir, ls.

The Kubernetes docs' own examples use them (`touch /tmp/healthy; sleep 30; rm -f
/tmp/healthy` for liveness probes, `echo "$i: $(date)"` for logging). A directory made by
`mkdir` is recorded as a `path/` entry in the files map (see `vfs`). Messages are GNU
coreutils'.
"""

from __future__ import annotations

import datetime as dt
import posixpath

from agents.toolbox import vfs
from agents.toolbox.core import Command, Proc, abspath


async def date(proc: Proc, argv: list[str]) -> int:
    """date [-u] [-R] [-I[date|seconds]] [+FORMAT]; the container clock is UTC."""
    now = dt.datetime.now(dt.UTC)
    fmt = "%a %b %e %H:%M:%S UTC %Y"
    for arg in argv[1:]:
        if arg.startswith("+"):
            fmt = arg[1:]
        elif arg in ("-u", "--utc"):
            continue
        elif arg == "-R":
            fmt = "%a, %d %b %Y %H:%M:%S +0000"
        elif arg in ("-I", "-Idate", "--iso-8601"):
            fmt = "%Y-%m-%d"
        elif arg in ("-Iseconds", "--iso-8601=seconds"):
            fmt = "%Y-%m-%dT%H:%M:%S+00:00"
        else:
            proc.stderr.write(f"date: invalid date '{arg}'\n")
            return 1
    proc.stdout.write(now.strftime(fmt.replace("%N", f"{now.microsecond * 1000:09d}")) + "\n")
    return 0


async def touch(proc: Proc, argv: list[str]) -> int:
    files = proc.target.files
    status = 0
    operands = [a for a in argv[1:] if not a.startswith("-")]
    if not operands:
        proc.stderr.write("touch: missing file operand\n")
        return 1
    for name in operands:
        path = abspath(name, proc.target.cwd)
        if path in files or vfs.is_dir(files, path):
            continue
        why = vfs.can_create(files, path)
        if why:
            reason = "No such file or directory" if why == "Directory nonexistent" else why
            proc.stderr.write(f"touch: cannot touch '{name}': {reason}\n")
            status = 1
            continue
        files[path] = ""
    return status


async def rm(proc: Proc, argv: list[str]) -> int:
    flags = "".join(a[1:] for a in argv[1:] if a.startswith("-") and a != "-")
    force, recursive = "f" in flags, "r" in flags or "R" in flags
    files = proc.target.files
    status = 0
    for name in [a for a in argv[1:] if not a.startswith("-") or a == "-"]:
        path = abspath(name, proc.target.cwd)
        if path in files:
            del files[path]
        elif vfs.is_dir(files, path):
            if not recursive:
                proc.stderr.write(f"rm: cannot remove '{name}': Is a directory\n")
                status = 1
                continue
            prefix = path.rstrip("/") + "/"
            for key in [k for k in files if k.startswith(prefix)]:
                del files[key]
        elif not force:
            proc.stderr.write(f"rm: cannot remove '{name}': No such file or directory\n")
            status = 1
    return status


async def mkdir(proc: Proc, argv: list[str]) -> int:
    parents = any(a in ("-p", "--parents") for a in argv[1:])
    files = proc.target.files
    status = 0
    for name in [a for a in argv[1:] if not a.startswith("-")]:
        path = abspath(name, proc.target.cwd)
        if vfs.is_dir(files, path) or path in files:
            if not parents or path in files:
                proc.stderr.write(f"mkdir: cannot create directory '{name}': File exists\n")
                status = 1
            continue
        if not parents and not vfs.is_dir(files, posixpath.dirname(path)):
            proc.stderr.write(f"mkdir: cannot create directory '{name}': "
                              "No such file or directory\n")
            status = 1
            continue
        if len(files) >= vfs.MAX_FILES:
            proc.stderr.write(f"mkdir: cannot create directory '{name}': "
                              "No space left on device\n")
            return 1
        files[path + "/"] = ""
    return status


async def ls(proc: Proc, argv: list[str]) -> int:
    """ls [-1aAl] [PATH...]: one name per line (the output is never a terminal's columns)."""
    flags = "".join(a[1:] for a in argv[1:] if a.startswith("-"))
    operands = [a for a in argv[1:] if not a.startswith("-")] or ["."]
    files = proc.target.files
    paths = vfs.listing(files)
    status = 0
    for k, name in enumerate(operands):
        path = abspath(name, proc.target.cwd)
        if path in files:
            proc.stdout.write(_long(name, files[path], False) if "l" in flags else name + "\n")
            continue
        if not vfs.is_dir(files, path):
            proc.stderr.write(f"ls: cannot access '{name}': No such file or directory\n")
            status = 2
            continue
        if len(operands) > 1:
            proc.stdout.write(("\n" if k else "") + f"{name}:\n")
        prefix = path.rstrip("/") + "/"
        children = sorted({p[len(prefix):].split("/")[0] for p in paths
                           if p.startswith(prefix) and p != prefix})
        if "a" not in flags and "A" not in flags:
            children = [c for c in children if not c.startswith(".")]
        for child in children:
            full = prefix + child
            if "l" in flags:
                proc.stdout.write(_long(child, files.get(full, ""), full not in files))
            else:
                proc.stdout.write(child + "\n")
    return status


def _long(name: str, text: str, directory: bool) -> str:
    mode = "drwxr-xr-x" if directory else "-rw-r--r--"
    size = 4096 if directory else len(text.encode())
    return f"{mode}    1 root     root     {size:>8} Jan  1 00:00 {name}\n"


COMMANDS: dict[str, Command] = {"date": date, "touch": touch, "rm": rm, "mkdir": mkdir, "ls": ls}
