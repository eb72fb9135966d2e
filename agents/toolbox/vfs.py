"""The container's virtual filesystem as commands see it: a flat dict of path -> text.

A directory exists when it is one of the usual image directories (`STANDARD_DIRS`), when a
file lives under it, or when `mkdir` recorded it as an empty `path/` entry. Writing is bounded
(`MAX_FILE_BYTES` per file, `MAX_FILES` in all) so a script appending in a loop fails with
"No space left on device", as a full disk would, instead of growing the agent's memory.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping

STANDARD_DIRS = frozenset({
    "/", "/bin", "/dev", "/etc", "/home", "/lib", "/media", "/mnt", "/opt", "/proc", "/root",
    "/run", "/sbin", "/srv", "/sys", "/tmp", "/usr", "/usr/bin", "/usr/local",
    "/usr/local/bin", "/usr/sbin", "/usr/share", "/var", "/var/log", "/var/run", "/var/tmp",
    "/var/www", "/usr/share/nginx", "/usr/share/nginx/html", "/data"})
DEVICES = frozenset({"/dev/null", "/dev/stdin", "/dev/stdout", "/dev/stderr", "/dev/zero",
                     "/dev/tty"})
MAX_FILE_BYTES = 4 << 20
MAX_FILES = 4096


def resolve(cwd: str, path: str) -> str:
    """An absolute, normalised path (`..` at the root stays at the root)."""
    return posixpath.normpath(posixpath.join(cwd or "/", path)).replace("//", "/")


def is_dir(files: Mapping[str, str], path: str) -> bool:
    if path in STANDARD_DIRS:
        return True
    prefix = path.rstrip("/") + "/"
    return any(name.startswith(prefix) for name in files)


def exists(files: Mapping[str, str], path: str) -> bool:
    return path in files or path in DEVICES or is_dir(files, path)


def can_create(files: Mapping[str, str], path: str) -> str | None:
    """Why `path` cannot be created as a file (dash's words), or None when it can."""
    if is_dir(files, path):
        return "Is a directory"
    if not is_dir(files, posixpath.dirname(path)):
        return "Directory nonexistent"
    if path not in files and len(files) >= MAX_FILES:
        return "No space left on device"
    return None


def listing(files: Mapping[str, str]) -> set[str]:
    """Every path that exists: the files and every directory above them."""
    names = [name.rstrip("/") for name in files]
    paths = set(names) | set(STANDARD_DIRS)
    for name in names:
        parent = posixpath.dirname(name)
        while parent not in paths:
            paths.add(parent)
            parent = posixpath.dirname(parent)
    return paths
